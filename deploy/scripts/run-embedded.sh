#!/usr/bin/env bash
# `make run`: the embedded default on a fresh machine — SQLite and a file-system broker
# under $BSN_DATA_DIR, the Docker driver if an engine answers (else local processes),
# web + worker + beat under honcho. PORT and BSN_DATA_DIR can be set.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PORT="${PORT:-8000}"
export BSN_DATA_DIR="${BSN_DATA_DIR:-$PWD/.data/embedded}"
export DJANGO_SETTINGS_MODULE=bsn.settings
unset DATABASE_URL CELERY_BROKER_URL
PY=.venv/bin/python
mkdir -p "$BSN_DATA_DIR"

$PY manage.py migrate --noinput -v 0
$PY manage.py collectstatic --noinput -v 0
driver=process
if docker info >/dev/null 2>&1; then
    if $PY manage.py bsn_images build; then
        driver=docker
    else
        echo "ledger image build failed: falling back to the process driver" >&2
    fi
fi
export BSN_DEFAULT_DRIVER=$driver
$PY manage.py bsn_demo --driver "$driver" | tee "$BSN_DATA_DIR/demo-login.txt"
echo
echo "bsn is starting on http://127.0.0.1:$PORT/  (API: /api/v1/docs, admin: /admin/)"
echo "data directory: $BSN_DATA_DIR   (Ctrl-C stops web, worker and beat)"
exec .venv/bin/honcho -f deploy/Procfile.embedded start

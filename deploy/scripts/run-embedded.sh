#!/usr/bin/env bash
# `make run`: the embedded default on a fresh machine — SQLite and a file-system broker
# under $BSN_DATA_DIR, the Docker driver if an engine answers (else local processes),
# web + worker + beat under honcho. PORT and BSN_DATA_DIR can be set; DATABASE_URL and
# CELERY_BROKER_URL, when set, are used instead of SQLite and the file-system broker.
# Seeds a demo tenant (bsn_demo) and DCEP (dcep_setup: central bank, two operator banks,
# the tier-1 chain app, which the worker provisions once it starts).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PORT="${PORT:-8000}"
export BSN_DATA_DIR="${BSN_DATA_DIR:-$PWD/.data/embedded}"
export DJANGO_SETTINGS_MODULE=bsn.settings
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
echo "DCEP (docs/dcep.md): institutions, owners and API tokens"
if ! $PY manage.py dcep_setup --wait 0 --driver "$driver" | tee "$BSN_DATA_DIR/dcep-login.txt"; then
    echo "dcep_setup failed (above); the rest of bsn runs without DCEP" >&2
fi
echo
echo "bsn is starting on http://127.0.0.1:$PORT/  (API: /api/v1/docs, admin: /admin/)"
# Name the source, not the URL (it may carry a password).
database="SQLite in $BSN_DATA_DIR" broker="file system in $BSN_DATA_DIR"
if [ -n "${DATABASE_URL:-}" ]; then database="\$DATABASE_URL"; fi
if [ -n "${CELERY_BROKER_URL:-}" ]; then broker="\$CELERY_BROKER_URL"; fi
echo "database: $database   broker: $broker"
echo "data directory: $BSN_DATA_DIR   (Ctrl-C stops web, worker and beat)"
exec .venv/bin/honcho -f deploy/Procfile.embedded start

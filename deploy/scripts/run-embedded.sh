#!/usr/bin/env bash
# `make run`: the embedded default on a fresh machine — SQLite and a file-system broker
# under $BSN_DATA_DIR, the Docker driver if an engine answers (else local processes),
# web + worker + beat under supervisord (deploy/supervisor/embedded.conf: a process that
# dies is restarted with backoff, the others keep running). PORT and BSN_DATA_DIR can be set; DATABASE_URL and
# CELERY_BROKER_URL, when set, are used instead of SQLite and the file-system broker.
# Seeds a demo tenant (bsn_demo) and DCEP (dcep_setup: central bank, two operator banks,
# the tier-1 chain app, which the worker provisions once it starts).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PORT="${PORT:-8000}"
export BSN_DATA_DIR="${BSN_DATA_DIR:-$PWD/.data/embedded}"
export BSN_ROOT="$PWD"
export DJANGO_SETTINGS_MODULE=bsn.settings
PY=.venv/bin/python
mkdir -p "$BSN_DATA_DIR"
chmod 700 "$BSN_DATA_DIR"  # the database, the secret key and the printed logins live here

$PY manage.py migrate --noinput -v 0
$PY manage.py collectstatic --noinput -v 0
# BSN_EMBEDDED_DRIVER=process|docker|auto (default auto: docker if its engine answers).
driver=process
want="${BSN_EMBEDDED_DRIVER:-auto}"
if [ "$want" != process ] && docker info >/dev/null 2>&1; then
    if $PY manage.py bsn_images build; then
        driver=docker
    else
        echo "ledger image build failed: falling back to the process driver" >&2
    fi
fi
export BSN_DEFAULT_DRIVER=$driver
# The first run creates the logins; later runs print the same ones again (a password
# changed since is not printed) and reuse the token. demo-login.txt is 0600.
$PY manage.py bsn_demo --driver "$driver" --login-file "$BSN_DATA_DIR/demo-login.txt"
echo
echo "DCEP (docs/dcep.md): institutions, owners and API tokens"
rm -f "$BSN_DATA_DIR/dcep-login.txt"  # re-created 0600 below (it holds passwords and tokens)
if ! (umask 077 && $PY manage.py dcep_setup --wait 0 --driver "$driver" | tee "$BSN_DATA_DIR/dcep-login.txt"); then
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
echo "processes: BSN_DATA_DIR=$BSN_DATA_DIR BSN_ROOT=$BSN_ROOT PORT=$PORT .venv/bin/supervisorctl -c deploy/supervisor/embedded.conf status"
exec .venv/bin/supervisord -c deploy/supervisor/embedded.conf

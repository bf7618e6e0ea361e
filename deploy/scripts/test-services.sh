#!/usr/bin/env bash
# Make sure what the test suite needs is installed and running on this machine:
# PostgreSQL (peer auth for the current user over the unix socket), Redis on loopback,
# a Docker engine, debootstrap (to build the ledger base image with no registry), etcd,
# chromium (the browser tests drive Debian's build: no browser can be downloaded here).
# Idempotent: installs only what is missing, starts only what does not answer.
set -euo pipefail

log() { echo "[services] $*"; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)  # the ordering tests run a local member
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # tests/browser (Playwright)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- PostgreSQL -------------------------------------------------------------------------
if ! pg_isready -q -h /var/run/postgresql; then
    cluster=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')
    if [ -z "$cluster" ]; then
        version=$(ls /usr/lib/postgresql | sort -V | tail -1)
        $SUDO pg_createcluster "$version" main >/dev/null
        cluster="$version main"
    fi
    log "starting PostgreSQL $cluster"
    # shellcheck disable=SC2086
    $SUDO pg_ctlcluster $cluster start
    for _ in $(seq 1 50); do pg_isready -q -h /var/run/postgresql && break; sleep 0.2; done
fi
me=$(id -un)
if ! psql -h /var/run/postgresql -d postgres -tAc "select 1" >/dev/null 2>&1; then
    log "creating PostgreSQL role $me (peer authentication, CREATEDB)"
    $SUDO -u postgres psql -q -c "CREATE ROLE \"$me\" LOGIN CREATEDB SUPERUSER" 2>/dev/null \
        || (cd / && su postgres -c "psql -q -c 'CREATE ROLE \"$me\" LOGIN CREATEDB SUPERUSER'")
fi

# --- Redis ------------------------------------------------------------------------------
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "starting Redis on 127.0.0.1:6379"
    redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save "" --appendonly no >/dev/null
    for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

# --- Docker -----------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    mkdir -p /var/log
    # Each app and ordering service gets its own network: /24s from one private /14 give
    # 1,024 of them (the engine's default pools hold about 30, which parallel runs used up).
    (setsid nohup dockerd --default-address-pool base=172.28.0.0/14,size=24 >/var/log/bsn-dockerd.log 2>&1 &)
    for _ in $(seq 1 150); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
    docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/bsn-dockerd.log"; exit 1; }
fi
log "PostgreSQL, Redis and Docker answer"

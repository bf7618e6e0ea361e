"""Entry point: ``python3 -m bsn.ledger``.

Exit status: 0 after SIGTERM/SIGINT, 1 when the node cannot start (data dir locked, a
chain that does not verify, a node key that does not match, port taken), 2 for a bad
configuration value.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from bsn.ledger import __version__
from bsn.ledger.config import ConfigError, load


def _say(message: str) -> None:
    print(f"bsn-ledger: {message}", file=sys.stderr, flush=True)


def _block_ssl() -> None:
    # http.server imports http.client, which imports ssl only to offer HTTPS clients;
    # loading OpenSSL costs ~6 MiB RSS per node and the node never speaks TLS itself.
    # A None entry makes that optional import fail quietly. The etcd orderer talks
    # plain HTTP; remove this once the node needs TLS (e.g. https etcd endpoints).
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]


# A warm node (docs/provisioning.md, "Warm nodes"; bsn/ledger/claim.py) is started before it
# belongs to any app: with BSN_CLAIM_FILE set and no such file yet, it loads its modules and
# stands by until it is claimed, over HTTP on its own port (with BSN_CLAIM_KEY_FILE) or by the
# engine writing the file, then starts with the claim's settings.
CLAIM_POLL_S = 0.005  # an open() every 5 ms while the file is the only way the claim comes
# With the claim server listening, an HTTP claim wakes the node at once; the file is the
# control plane's way back when that claim got no answer, looked at less often (an idle
# warm node's wake-ups are its whole cost: at 5 ms, ~1.5% of a core).
CLAIM_FILE_POLL_S = 0.05


def _read_claim(path: str) -> dict[str, str] | None:
    """The claim file's settings; None while it is missing or not yet whole (the engine may
    still be writing it: a partial JSON object never parses). ConfigError when it is whole
    but not a JSON object of ``BSN_*`` strings."""
    from bsn.ledger.claim import ClaimRefused, check_settings

    try:
        with open(path, encoding="utf-8") as f:
            claimed = json.load(f)
    except (OSError, ValueError):
        return None
    try:
        return check_settings(claimed, path)
    except ClaimRefused as exc:
        raise ConfigError(str(exc)) from None


def _stand_by_server(path: str):
    """The claim server on the node's own port, or None: no claim key (claims come by file
    only) or the port cannot be had (said; the file still works)."""
    key_file = os.environ.get("BSN_CLAIM_KEY_FILE", "")
    if not key_file:
        return None
    from bsn.ledger.claim import ClaimRefused, StandByServer, claim_key

    try:
        with open(key_file, encoding="utf-8") as f:
            key = claim_key(f.read())
        from bsn.ledger.config import Config

        host = os.environ.get("BSN_LEDGER_HOST", Config.host).strip()
        port = int(os.environ.get("BSN_LEDGER_PORT", str(Config.port)))
        return StandByServer((host, port), key, path)
    except (OSError, ValueError, ClaimRefused) as exc:
        _say(f"claims by file only: {exc}")
        return None


def _stand_by(path: str):
    """Load what start-up imports (most of a node's start time), then wait for the claim;
    ``(settings, server)`` (the claim server whose socket the node's server takes over, or
    None), or None when told to stop first."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    if not _wants_tls(os.environ):
        _block_ssl()
    import bsn.ledger.chain
    import bsn.ledger.ordering.etcd
    import bsn.ledger.ordering.solo
    import bsn.ledger.server  # noqa: F401

    server = _stand_by_server(path)
    _say(f"v{__version__} standing by for {path}" + (" and POST /claim" if server else ""))
    while not stopping.is_set():
        if server is not None:
            found = server.settled(lambda: _read_claim(path))
        else:
            filed = _read_claim(path)
            found = None if filed is None else (filed, "by file")
        if found is not None:
            claimed, came = found
            _say(f"claimed {came}")
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            return claimed, server
        # Woken at once by an HTTP claim; the file is looked at every CLAIM_FILE_POLL_S.
        if server is not None:
            server.claimed.wait(CLAIM_FILE_POLL_S)
        else:
            stopping.wait(CLAIM_POLL_S)
    if server is not None:
        server.close()
    return None


def _wants_tls(env) -> bool:
    return any(e.strip().startswith("https://") for e in env.get("BSN_ETCD_ENDPOINTS", "").split(","))


def _claim():
    """With BSN_CLAIM_FILE: the claim's settings go into the environment (waiting for them
    on a warm node's first start; a claimed node's restart finds the file). ``(status,
    server)``: status None to go on starting (else the exit status); server the claim
    server whose listening socket the node's server takes over, or None."""
    path = os.environ.get("BSN_CLAIM_FILE", "")
    if not path:
        return None, None
    server = None
    try:
        if os.path.exists(path):
            claimed = _read_claim(path)
            if claimed is None:
                raise ConfigError(f"{path} is not a JSON object")
        else:
            ssl_blocked = not _wants_tls(os.environ)
            waited = _stand_by(path)
            if waited is None:
                _say("stopped")
                return 0, None
            claimed, server = waited
            if ssl_blocked and _wants_tls(claimed):
                # ssl was left out while standing by: start again with the claim, ssl and all
                # (the claim is on file; the new process listens afresh).
                if server is not None:
                    server.close()
                os.environ.update(claimed)
                os.execv(sys.executable, [sys.executable, "-m", "bsn.ledger"])  # noqa: S606 - the node itself, again
    except ConfigError as exc:
        _say(f"configuration error: {exc}")
        return 2, None
    os.environ.update(claimed)
    return None, server


def main() -> int:
    status, standby = _claim()
    if status is not None:
        return status
    try:
        config = load()
    except ConfigError as exc:
        if standby is not None:
            standby.close()
        _say(f"configuration error: {exc}")
        return 2

    if not any(e.startswith("https://") for e in config.etcd_endpoints):
        _block_ssl()
    from bsn.ledger.chain import ChainError, LedgerCore, StoreError  # after _block_ssl(), see there
    from bsn.ledger.ordering import make_orderer
    from bsn.ledger.server import LedgerHTTPServer

    core = LedgerCore(config, warn=_say)
    started = time.monotonic()
    try:
        height = core.open()
    except (StoreError, ChainError) as exc:
        _say(f"cannot start: {exc}")
        return 1
    replay_s = time.monotonic() - started
    if config.admin_public_key is None:
        _say("warning: BSN_ADMIN_PUBLIC_KEY is not set: no user can be added, the node only serves reads")
    credential = config.api_credential
    if credential is None:
        from bsn.ledger.auth import local_credential

        try:
            credential, path = local_credential(config.data_dir)
        except OSError as exc:
            core.close()
            _say(f"cannot start: no BSN_NODE_API_CREDENTIAL_FILE and cannot keep one in the data dir: {exc}")
            return 1
        _say(f"no BSN_NODE_API_CREDENTIAL_FILE: callers authenticate with the credential in {path}")
    listener = None
    if standby is not None:
        # The claim server's socket, if it listens where the node is to: whoever connects
        # between the claim and now is served by the node instead of being refused.
        same = tuple(standby.server_address[:2]) == (config.host, config.port)
        if same:
            listener = standby.handover()
        else:
            standby.close()
    try:
        orderer = make_orderer(config)
        server = LedgerHTTPServer(config, core, orderer, credential, listener=listener)
    except OSError as exc:
        core.close()
        _say(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")
        return 1
    orderer.start(core)

    def stop(signum: int, _frame: object) -> None:
        # shutdown() waits for serve_forever(), which runs on this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    host, port = server.server_address[:2]
    _say(
        f"v{__version__} node={config.node_id} app={config.app_id} contract={config.contract} "
        f"ordering={config.ordering} listening on {host}:{port}, data={config.data_dir}, "
        f"chain verified to height {height} in {replay_s:.2f} s, head={core.head_hash[:16]}"
    )
    try:
        server.serve_forever(poll_interval=0.25)
    finally:
        server.server_close()
        orderer.stop()  # commits what is queued, then the thread ends
        core.close()  # waits for an in-flight block to finish its fsync
    _say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

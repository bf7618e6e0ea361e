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


# A warm node (docs/provisioning.md, "Warm nodes") is started before it belongs to any app:
# with BSN_CLAIM_FILE set and no such file yet, it loads its modules and waits; the control
# plane claims it by writing the file (a JSON object of BSN_* settings, the secrets' *_FILE
# paths among them) into its secrets directory, and the node starts with those settings.
CLAIM_POLL_S = 0.005  # a stat() every 5 ms while waiting: nothing measurable when idle


def _read_claim(path: str) -> dict[str, str] | None:
    """The claim file's settings; None while it is missing or not yet whole (the engine may
    still be writing it: a partial JSON object never parses). ConfigError when it is whole
    but not a JSON object of ``BSN_*`` strings."""
    try:
        with open(path, encoding="utf-8") as f:
            claimed = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(claimed, dict) or not all(
        isinstance(k, str) and k.startswith("BSN_") and k != "BSN_CLAIM_FILE" and isinstance(v, str)
        for k, v in claimed.items()
    ):
        raise ConfigError(f"{path} must be a JSON object of BSN_* settings (strings)")
    return claimed


def _stand_by(path: str) -> dict[str, str] | None:
    """Load what start-up imports (most of a node's start time), then wait for the claim;
    its settings, or None when told to stop first."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    if not _wants_tls(os.environ):
        _block_ssl()
    import bsn.ledger.chain
    import bsn.ledger.ordering.etcd
    import bsn.ledger.ordering.solo
    import bsn.ledger.server  # noqa: F401

    _say(f"v{__version__} standing by for {path}")
    while not stopping.is_set():
        claimed = _read_claim(path)
        if claimed is not None:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            return claimed
        stopping.wait(CLAIM_POLL_S)
    return None


def _wants_tls(env) -> bool:
    return any(e.strip().startswith("https://") for e in env.get("BSN_ETCD_ENDPOINTS", "").split(","))


def _claim() -> int | None:
    """With BSN_CLAIM_FILE: the claim's settings go into the environment (waiting for them
    on a warm node's first start; a claimed node's restart finds the file). None to go on
    starting, else the exit status."""
    path = os.environ.get("BSN_CLAIM_FILE", "")
    if not path:
        return None
    try:
        if os.path.exists(path):
            claimed = _read_claim(path)
            if claimed is None:
                raise ConfigError(f"{path} is not a JSON object")
        else:
            ssl_blocked = not _wants_tls(os.environ)
            claimed = _stand_by(path)
            if claimed is None:
                _say("stopped")
                return 0
            if ssl_blocked and _wants_tls(claimed):
                # ssl was left out while standing by: start again with the claim, ssl and all.
                os.environ.update(claimed)
                os.execv(sys.executable, [sys.executable, "-m", "bsn.ledger"])  # noqa: S606 - the node itself, again
    except ConfigError as exc:
        _say(f"configuration error: {exc}")
        return 2
    os.environ.update(claimed)
    return None


def main() -> int:
    status = _claim()
    if status is not None:
        return status
    try:
        config = load()
    except ConfigError as exc:
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
    try:
        orderer = make_orderer(config)
        server = LedgerHTTPServer(config, core, orderer, credential)
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

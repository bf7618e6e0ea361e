"""Entry point: ``python3 -m bsn.ledger``.

Exit status: 0 after SIGTERM/SIGINT, 1 when the node cannot start (data dir locked, a
chain that does not verify, a node key that does not match, port taken), 2 for a bad
configuration value.
"""

from __future__ import annotations

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


def main() -> int:
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

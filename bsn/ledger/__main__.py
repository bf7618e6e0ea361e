"""Entry point: ``python3 -m bsn.ledger``.

Exit status: 0 after SIGTERM/SIGINT, 1 when the node cannot start (data dir locked or
corrupt, port taken), 2 for a bad configuration value.
"""

from __future__ import annotations

import signal
import sys
import threading

from bsn.ledger import __version__
from bsn.ledger.config import ConfigError, load
from bsn.ledger.node import LedgerNode
from bsn.ledger.store import StoreError


def _say(message: str) -> None:
    print(f"bsn-ledger: {message}", file=sys.stderr, flush=True)


def _block_ssl() -> None:
    # http.server imports http.client, which imports ssl only to offer HTTPS clients;
    # loading OpenSSL costs ~6 MiB RSS per node and the node never speaks TLS itself.
    # A None entry makes that optional import fail quietly. Remove this once the node
    # needs TLS (e.g. to reach etcd over https).
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]


def main() -> int:
    try:
        config = load()
    except ConfigError as exc:
        _say(f"configuration error: {exc}")
        return 2

    _block_ssl()
    from bsn.ledger.server import LedgerHTTPServer  # after _block_ssl(), see there

    node = LedgerNode(config)
    try:
        node.open()
    except StoreError as exc:
        _say(f"cannot open data: {exc}")
        return 1
    try:
        server = LedgerHTTPServer(node, access_log=config.access_log)
    except OSError as exc:
        node.close()
        _say(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")
        return 1

    def stop(signum: int, _frame: object) -> None:
        # shutdown() waits for serve_forever(), which runs on this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    host, port = server.server_address[:2]
    _say(
        f"v{__version__} node={config.node_id} app={config.app_id} contract={config.contract} "
        f"listening on {host}:{port}, data={config.data_dir}, replayed {node.replayed} records"
    )
    try:
        server.serve_forever(poll_interval=0.25)
    finally:
        server.server_close()
        node.close()  # waits for an in-flight write to finish its fsync
    _say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

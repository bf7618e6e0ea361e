"""A ledger node stand-in for the process-death test: an EtcdOrderer over a FakeCore.

Usage: python -m tests.ordering.orderer_proc <endpoint> <prefix> <node id> [<etcd user> <password>]
Prints "PROPOSER" once it holds the proposer lease, then runs until killed.
"""

from __future__ import annotations

import sys
import time

from bsn.ledger.ordering.etcd import EtcdOrderer
from tests.ordering.conftest import FakeCore


def main() -> None:
    endpoint, prefix, node_id = sys.argv[1:4]
    user, password = [*sys.argv[4:6], None, None][:2]
    orderer = EtcdOrderer(
        {
            "node_id": node_id,
            "etcd_endpoints": [endpoint],
            "etcd_prefix": prefix,
            "block_max_wait_ms": 5,
            "etcd_user": user,
            "etcd_password": password or "",
        }
    )
    orderer.start(FakeCore(node_id))
    while not orderer.is_proposer:
        time.sleep(0.02)
    print("PROPOSER", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()

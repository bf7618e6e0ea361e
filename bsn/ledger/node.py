"""The node: one contract's state, kept durable by the write-ahead log."""

from __future__ import annotations

import threading
import time
from typing import Any

from bsn.ledger import __version__
from bsn.ledger.config import Config
from bsn.ledger.contracts import CONTRACTS
from bsn.ledger.store import WriteAheadLog


class LedgerNode:
    """Applies operations in log order: log first (fsync), then state, then reply."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.contract = CONTRACTS[config.contract]()
        self.log = WriteAheadLog(config.data_dir)
        # Serialises log order with state order, so readers never see a state that the
        # log would not rebuild after a restart.
        self._lock = threading.Lock()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.replayed = 0

    def open(self) -> None:
        self.replayed = self.log.open(self.contract.apply)

    def close(self) -> None:
        with self._lock:
            self.log.close()

    @property
    def healthy(self) -> bool:
        return self.log.failed is None

    def info(self) -> dict[str, Any]:
        return {
            "node_id": self.config.node_id,
            "app_id": self.config.app_id,
            "contract": self.config.contract,
            "version": __version__,
            "keys": len(self.contract),
            "seq": self.log.seq,
            "started_at": self.started_at,
        }

    # kv operations (the only contract so far).

    def kv_get(self, key: str) -> Any:
        with self._lock:
            return self.contract.get(key)

    def kv_put(self, key: str, value: Any) -> None:
        with self._lock:
            record = self.contract.put_record(key, value)
            self.contract.apply(self.log.append(record))

    def kv_delete(self, key: str) -> bool:
        """Delete ``key``; False when it did not exist (nothing is logged then)."""
        with self._lock:
            record = self.contract.delete_record(key)
            if record is None:
                return False
            self.contract.apply(self.log.append(record))
            return True

"""The world state a chain of blocks builds: contract key-values, nonces, receipts.

Only :class:`bsn.ledger.chain.LedgerCore` mutates it, and only after the block that
changes it is durable. ``root`` chains as SHA-256(prev_root || canonical(write_set)).
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any

from bsn.ledger.canonical import dumps

ZERO_ROOT = bytes(32)


def next_root(prev_root: bytes, write_set: list[list[Any]]) -> bytes:
    """State root after a block whose committed transactions wrote ``write_set``."""
    return sha256(prev_root + dumps(write_set)).digest()


class State:
    """Per-contract key-value state plus the indexes the node answers from."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.nonces: set[tuple[str, str]] = set()  # (signer, nonce) pairs in the chain
        self.receipts: dict[str, dict[str, Any]] = {}  # tx_id -> receipt
        self.history: dict[tuple[str, str], list[dict[str, Any]]] = {}  # contracts that keep history
        self.root = ZERO_ROOT
        self.committed = 0
        self.failed = 0

    def get(self, contract: str, key: str) -> Any:
        """Value of ``key`` in ``contract``, None when absent."""
        values = self.data.get(contract)
        return None if values is None else values.get(key)

    def apply(
        self,
        writes: list[list[Any]],
        history: list[tuple[str, str, dict[str, Any]]],
        nonces: list[tuple[str, str]],
        receipts: list[dict[str, Any]],
        root: bytes,
    ) -> None:
        """Commit one block's effects (already computed and persisted)."""
        data = self.data
        for contract, key, value in writes:
            values = data.get(contract)
            if values is None:
                values = data[contract] = {}
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        for contract, key, entry in history:
            self.history.setdefault((contract, key), []).append(entry)
        self.nonces.update(nonces)
        for receipt in receipts:
            self.receipts[receipt["tx_id"]] = receipt
            if receipt["status"] == "committed":
                self.committed += 1
            else:
                self.failed += 1
        self.root = root

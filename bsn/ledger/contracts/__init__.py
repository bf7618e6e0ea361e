"""Built-in contract templates, by the name used in ``BSN_CONTRACT``.

A contract is deterministic state built only by applying logged records in order, so
replaying the write-ahead log (and, later, blocks) always rebuilds the same state.
"""

from __future__ import annotations

from bsn.ledger.contracts.kv import KVContract

CONTRACTS = {
    KVContract.name: KVContract,
}

__all__ = ["CONTRACTS", "KVContract"]

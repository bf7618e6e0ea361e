"""Ordering: how prechecked transactions become committed blocks.

An :class:`Orderer` takes envelopes that :meth:`LedgerCore.precheck` admitted and, one
block at a time, hands committed blocks to ``core.apply_committed``. ``solo`` (this
package) orders for one node; ``etcd`` (``ordering/etcd.py``) orders through the
platform's etcd cluster (docs/ledger-protocol.md, "Ordering with etcd").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bsn.ledger.chain import LedgerCore
    from bsn.ledger.config import Config


class OrderingUnavailable(Exception):
    """Submissions cannot be handed to ordering now (HTTP 503; the client retries)."""


class Orderer(Protocol):
    mode: str  # "solo" | "etcd"

    def start(self, core: LedgerCore) -> None:
        """Begin; blocks are cut with core.make_block(envelopes, ts, parsed=True) and
        committed ones go to core.apply_committed(block, parsed=True)."""

    def submit(self, envelopes: list[dict]) -> None:
        """Durably hand prechecked envelopes to ordering; raise OrderingUnavailable if it cannot."""

    def stop(self) -> None: ...

    def catch_up(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until this node has applied every block the
        ordering committed before the call; True when the node's height moved meanwhile.
        Read-your-writes for a client that saw a commit through another node."""

    def status(self) -> dict:
        """{"mode", "proposer", "is_proposer", "lag_blocks"}"""


def make_orderer(config: Config) -> Orderer:
    """The orderer for ``config.ordering``."""
    if config.ordering == "etcd":
        from bsn.ledger.ordering.etcd import EtcdOrderer

        return EtcdOrderer(config)
    from bsn.ledger.ordering.solo import SoloOrderer

    return SoloOrderer(config)


__all__ = ["Orderer", "OrderingUnavailable", "make_orderer"]

"""The interface between the chain-event reader and its consumers (issue 10).

The reader (this app) walks each app's committed blocks from a cursor per consumer and
calls every consumer in ``CONSUMERS`` with the events of the blocks it read, in chain
order. A consumer must be idempotent on ``ChainEvent.key``: after a crash the reader may
hand it the same events again (at least once), never skip one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

# Dotted paths of ``callable(app_id: UUID, events: list[ChainEvent]) -> None``. The same
# module also defines ``interested_apps() -> Iterable[UUID]``: the apps whose events the
# consumer wants (the reader pumps only those; apps/events/services.py, docs/events.md).
CONSUMERS: dict[str, str] = {
    "webhooks": "apps.webhooks.consumer.on_chain_events",
    "dcep-release": "apps.dcep.programmable.on_chain_events",
}


@dataclass(frozen=True)
class ChainEvent:
    app_id: UUID
    height: int
    index: int  # the transaction's index in its block
    seq: int  # the event's position within its transaction's receipt
    tx_id: str
    contract: str
    function: str
    signer: str
    name: str
    payload: Any
    block_time_ms: int

    @property
    def key(self) -> str:
        """Unique per event on a chain: use it to make a consumer exactly-once."""
        return f"{self.app_id}:{self.height}:{self.index}:{self.seq}"

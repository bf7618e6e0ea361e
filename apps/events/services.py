"""The event reader: walks each app's committed blocks and hands their events to consumers.

``pump_app`` reads ``GET /events`` from one healthy node of the app (through the
gateway's node-calling helpers, so the node proves who it is) and calls every consumer
interested in the app with the events past its own cursor. Everything for one app
happens under a lock on its ``EventFeed`` row taken with ``SKIP LOCKED``: a second worker
finds it taken and leaves the app alone instead of queueing behind it.

A consumer's cursor moves only after its ``on_chain_events`` returned, in the same
database transaction as the consumer's own writes (each consumer in a savepoint). A crash
anywhere before the commit leaves cursor and writes as they were, and the next pump hands
the same events again: at least once, never skipped. A consumer that raises keeps its
cursor and the others go on.

A consumer named in ``CONSUMERS`` whose module cannot be imported (deployed before its
code) is logged as an error and skipped; its cursor stays where it was, so it catches up
from there once it exists. ``tests/events/test_feed.py`` fails while one is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from apps.chainapps.models import ChainApp
from apps.events.feed import CONSUMERS, ChainEvent
from apps.events.models import EventCursor, EventFeed
from apps.gateway.errors import GatewayError, NodeNotFound
from apps.gateway.services import gateway_read

logger = logging.getLogger(__name__)

_reported: set[str] = set()
EVENT_FIELDS = ("height", "index", "seq", "tx_id", "contract", "function", "signer", "name", "payload", "block_time_ms")


@dataclass(frozen=True)
class Consumer:
    """A resolved entry of CONSUMERS: its callback and its interest (apps it wants events of)."""

    name: str
    on_chain_events: Callable[[UUID, list[ChainEvent]], None] | None
    interested_apps: Callable[[], Iterable[UUID]] | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def consumer_resolve(name: str, path: str) -> Consumer:
    """``path`` names ``on_chain_events``; ``interested_apps`` lives in the same module."""
    module = path.rsplit(".", 1)[0]
    try:
        return Consumer(name, import_string(path), import_string(f"{module}.interested_apps"))
    except ImportError as exc:
        if name not in _reported:  # once per process: the beat resolves them every few seconds
            _reported.add(name)
            logger.error("event consumer %r (%s) is unavailable, its cursors stay put: %s", name, path, exc)
        return Consumer(name, None, None, error=f"{type(exc).__name__}: {exc}")


def consumers() -> list[Consumer]:
    return [consumer_resolve(name, path) for name, path in CONSUMERS.items()]


def _interest(consumer: Consumer) -> set[UUID]:
    """The apps ``consumer`` wants; none (logged) when it is unavailable or its query fails."""
    if not consumer.ok:
        return set()
    try:
        return {UUID(str(app_id)) for app_id in consumer.interested_apps()}
    except Exception:  # one consumer's bug must not stop the others' events
        logger.exception("event consumer %s: interested_apps() failed", consumer.name)
        return set()


def interested_app_ids(resolved: list[Consumer] | None = None) -> dict[UUID, list[str]]:
    """App id → the names of the consumers that want its events."""
    wanted: dict[UUID, list[str]] = {}
    for consumer in resolved if resolved is not None else consumers():
        for app_id in sorted(_interest(consumer)):
            wanted.setdefault(app_id, []).append(consumer.name)
    return wanted


def _events_of(app_id: UUID, raw: list[dict]) -> list[ChainEvent]:
    return [ChainEvent(app_id=app_id, **{f: item[f] for f in EVENT_FIELDS}) for item in raw]


def pump_app(app_id: UUID | str, *, rounds: int | None = None, resolved: list[Consumer] | None = None) -> int:
    """Hand the app's new committed events to its interested consumers; the number of events read.

    Up to ``rounds`` reads of ``BSN_EVENTS_BLOCKS_PER_READ`` blocks, each in its own
    transaction (the lock is not held across rounds). 0 when another worker pumps the app.
    """
    app_id = UUID(str(app_id))
    resolved = consumers() if resolved is None else resolved
    total = 0
    for _ in range(rounds or settings.BSN_EVENTS_PUMP_ROUNDS):
        read, more = _pump_round(app_id, resolved)
        total += read
        if not more:
            break
    return total


def _pump_round(app_id: UUID, resolved: list[Consumer]) -> tuple[int, bool]:
    """One read from one node: (events read, whether the chain has more past it)."""
    app = ChainApp.objects.filter(pk=app_id).first()
    if app is None:
        return 0, False
    names = [c.name for c in resolved if app_id in _interest(c)]
    if not names:
        return 0, False
    by_name = {c.name: c for c in resolved}
    # Committed before the lock is taken: an insert left uncommitted under the lock would make
    # a second worker's identical insert wait for it instead of skipping the locked row.
    EventFeed.objects.bulk_create([EventFeed(app_id=app_id)], ignore_conflicts=True)
    with transaction.atomic():
        feed = EventFeed.objects.select_for_update(skip_locked=True).filter(pk=app_id).first()
        if feed is None:  # another worker is pumping this app right now
            return 0, False
        EventCursor.objects.bulk_create(
            [EventCursor(app_id=app_id, consumer=name) for name in names], ignore_conflicts=True
        )
        cursors = list(EventCursor.objects.filter(app_id=app_id, consumer__in=names).order_by("consumer"))
        after = min(c.height for c in cursors)
        try:
            answer = gateway_read(
                app=app, path=f"/events?after={after}&limit={settings.BSN_EVENTS_BLOCKS_PER_READ}", what="Events"
            )
            head, next_after = int(answer["height"]), int(answer["next_after"])
            events = _events_of(app_id, answer["events"])
        except (GatewayError, KeyError, TypeError, ValueError) as exc:
            detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
            if isinstance(exc, NodeNotFound):  # a node on a ledger image from before GET /events
                detail = "the node does not serve GET /events: its ledger image predates it; upgrade the app"
            EventFeed.objects.filter(pk=app_id).update(last_error=str(detail)[:1000])
            logger.warning("events: reading app %s failed: %s", app_id, detail)
            return 0, False
        failed = False
        for cursor in cursors:
            if cursor.height >= next_after:
                continue
            mine = [e for e in events if e.height > cursor.height]
            error = ""
            try:
                with transaction.atomic():  # a savepoint: a consumer that raises undoes only its own writes
                    if mine:
                        by_name[cursor.consumer].on_chain_events(app_id, mine)
            except Exception as exc:  # one consumer's bug must not stop the others
                logger.exception("event consumer %s failed on app %s", cursor.consumer, app_id)
                error = f"{type(exc).__name__}: {exc}"[:1000]
            if error:
                failed = True
                EventCursor.objects.filter(pk=cursor.pk).update(last_error=error, updated_at=timezone.now())
            else:
                EventCursor.objects.filter(pk=cursor.pk).update(
                    height=next_after, last_error="", updated_at=timezone.now()
                )
        EventFeed.objects.filter(pk=app_id).update(node_height=head, pumped_at=timezone.now(), last_error="")
    return len(events), next_after < head and not failed  # a failing consumer: wait for the next pump

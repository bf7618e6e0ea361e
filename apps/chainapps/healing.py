"""Healing from engine events: a node container that dies or is removed behind the
platform's back is started again within seconds, not at the next periodic pass.

Every worker watches the engines of the regions whose queues it consumes (a thread per
region, started when the worker is ready; regions it starts consuming later get one
too). The engine reports a ledger container of this installation that died or was
destroyed; the worker looks the node up and, if its app is meant to run and no operation
of the app is open, brings it up again (``reconcile.node_heal``: one worker per node at a
time, through a lock in the shared cache). A driver without the NodeEvents capability (the process
driver) is healed by the periodic pass alone, which stays the backstop for every driver:
events lost while a stream reconnects are found there.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)

REGION_QUEUE_PREFIX = "region."
HEAL_WORKERS = 4  # nodes healed at once by one worker process
# A heal that failed (the node did not come back verified) is tried again after these
# pauses, then left to the periodic pass with the node's last error visible: a restart
# loop backs off and ends, it never spins.
RETRY_DELAYS = (2.0, 5.0, 10.0, 20.0)
# Reconnecting to an engine that is down: first after RECONNECT_MIN seconds, doubling up
# to RECONNECT_MAX. A refused connection costs nothing, and the cap bounds how long after
# the engine's return its events still go unseen. A stream that was open for
# STREAM_SETTLED seconds before it broke starts the backoff over.
RECONNECT_MIN = 0.5
RECONNECT_MAX = 5.0
STREAM_SETTLED = 5.0


def _heal_with_retries(name: str, action: str, stop: threading.Event | None = None) -> None:
    for delay in (0.0, *RETRY_DELAYS):
        if delay and (stop.wait(delay) if stop is not None else threading.Event().wait(delay)):
            return
        result = _heal_by_name(name, action)
        if not (result or "").startswith("failed"):
            return
        action = f"{action.split(' ')[0]} (retry)"
    logger.warning(
        "engine event for node %s: gave up after %d attempts; the periodic pass takes over", name, 1 + len(RETRY_DELAYS)
    )


def _heal_by_name(name: str, action: str) -> str | None:
    from django.db import close_old_connections, connection

    from apps.chainapps.models import LedgerNode
    from apps.chainapps.reconcile import node_heal

    try:
        close_old_connections()
        node_id = (
            LedgerNode.objects.exclude(state=LedgerNode.State.REMOVED)
            .filter(name=name)
            .values_list("pk", flat=True)
            .first()
        )
        if node_id is None:
            return None  # not a node of ours (an orphan is the reconciler's business)
        result = node_heal(str(node_id))
        logger.warning("engine event %s for node %s: %s", action, name, result)
        from django.utils import timezone

        from apps.regions.models import Region

        Region.objects.filter(nodes__pk=node_id).update(
            last_event=f"{action} {name}: {result}"[:300], last_event_at=timezone.now()
        )
        return result
    except Exception:  # a bug or the database away: the periodic pass heals it
        logger.exception("healing node %s after %s failed", name, action)
        return None
    finally:
        connection.close()


class RegionWatcher(threading.Thread):
    """Follows one region's engine events until ``stop`` is set or the region is gone."""

    def __init__(self, code: str, stop: threading.Event) -> None:
        super().__init__(name=f"bsn-events-{code}", daemon=True)
        self.code = code
        self.stop = stop
        self.pool = ThreadPoolExecutor(HEAL_WORKERS, thread_name_prefix=f"bsn-heal-{code}")

    def run(self) -> None:
        from django.db import close_old_connections, connection

        from apps.common.models import installation_id
        from apps.regions.models import Region
        from apps.runtime.base import NodeEvents, supports
        from apps.runtime.drivers import driver_for_region

        delay = RECONNECT_MIN
        while not self.stop.is_set():
            opened = time.monotonic()
            try:
                close_old_connections()
                region = Region.objects.filter(code=self.code).first()
                if region is None:
                    return  # the region was removed
                driver = driver_for_region(region)
                inst = installation_id()
                connection.close()
                if not supports(driver, NodeEvents):
                    return  # this driver reports no events: the periodic pass heals
                for name, action in driver.node_events(installation_id=inst, stop=self.stop):
                    delay = RECONNECT_MIN
                    self.pool.submit(_heal_with_retries, name, action, self.stop)
            except Exception as exc:  # noqa: BLE001 - the engine or database is away: reconnect with backoff
                logger.info("events of region %s: %s; reconnecting in %.1fs", self.code, exc, delay)
            if time.monotonic() - opened >= STREAM_SETTLED:
                delay = RECONNECT_MIN  # it was connected: the engine just went (or restarts)
            self.stop.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX)


def watch_consumed_regions(consumer, *, interval: float, stop: threading.Event | None = None) -> threading.Thread:
    """Keep a RegionWatcher for every region queue ``consumer`` consumes (checked every
    ``interval`` seconds, so a region it starts following gets one too)."""
    stop = stop or threading.Event()
    watchers: dict[str, RegionWatcher] = {}

    def codes() -> set[str]:
        queues = consumer.task_consumer.queues if consumer.task_consumer else []
        return {q.name[len(REGION_QUEUE_PREFIX) :] for q in queues if q.name.startswith(REGION_QUEUE_PREFIX)}

    def loop() -> None:
        while True:
            for code in codes():
                watcher = watchers.get(code)
                if watcher is None or not watcher.is_alive():
                    watchers[code] = RegionWatcher(code, stop)
                    watchers[code].start()
            if stop.wait(interval):
                return

    thread = threading.Thread(target=loop, name="bsn-events", daemon=True)
    thread.start()
    return thread

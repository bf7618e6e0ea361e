"""How a bsn Celery worker process is started (one place for `bsn_worker` and the tests),
and how a worker that serves every region follows the region table while it runs."""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)

# Set by `bsn_worker` when it serves every region: the worker then also consumes the queue
# of each region added while it runs (checked every BSN_WORKER_FOLLOW_INTERVAL seconds).
FOLLOW_ENV = "BSN_WORKER_FOLLOW_REGIONS"


def worker_argv(
    queues: list[str], *, concurrency: int, name: str, extra: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """argv of a thread-pool worker consuming ``queues`` (node steps are I/O-bound waits)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bsn.celery",
        "worker",
        "-Q",
        ",".join(queues),
        "-P",
        "threads",
        "-c",
        str(concurrency),
        "--loglevel",
        "INFO",
        "-n",
        name,
        *extra,
    ]


def follow_regions(consumer, *, interval: float, stop: threading.Event | None = None) -> threading.Thread:
    """Start a thread that makes ``consumer`` consume every region's queue, new ones included.

    Celery's own ``add_consumer`` control command needs a broadcast channel, which the
    embedded file-system broker does not have; this asks the database instead and adds a
    queue the way that command does (``add_task_queue`` on the consumer's own loop).
    """
    from django.db import close_old_connections, connection

    from apps.regions.models import Region

    stop = stop or threading.Event()
    consuming = {queue.name for queue in consumer.task_consumer.queues} if consumer.task_consumer else set()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                close_old_connections()
                wanted = [region.queue for region in Region.objects.only("code").order_by("code")]
            except Exception:  # the database is away: try again next time
                logger.warning("could not read the regions to follow", exc_info=True)
                continue
            finally:
                connection.close()
            for queue in wanted:
                if queue not in consuming:
                    consuming.add(queue)
                    consumer.call_soon(consumer.add_task_queue, queue)
                    logger.warning("now consuming %s (a region added while this worker runs)", queue)

    thread = threading.Thread(target=loop, name="bsn-follow-regions", daemon=True)
    thread.start()
    return thread


def on_worker_ready(sender=None, **kwargs) -> None:
    """``worker_ready`` handler: follow the regions when ``bsn_worker`` asked for it, and
    heal nodes from the engine events of the regions this worker serves."""
    from django.conf import settings

    if os.environ.get(FOLLOW_ENV) == "1":
        follow_regions(sender, interval=settings.BSN_WORKER_FOLLOW_INTERVAL)
    if settings.BSN_HEAL_ON_EVENTS:
        from apps.chainapps.healing import watch_consumed_regions

        watch_consumed_regions(sender, interval=settings.BSN_WORKER_FOLLOW_INTERVAL)

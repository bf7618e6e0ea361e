"""Beat tasks of metering: the counter flush (default queue) and the node scrape (per region)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from apps.metering import services
from apps.regions.models import Region


@shared_task(acks_late=True)  # safe twice: each batch is claimed once (apps.metering.counters)
def counters_flush() -> dict:
    return services.counters_flush()


@shared_task
def nodes_scrape() -> list[str]:
    """Send one scrape pass to each region's queue (its worker reaches its nodes)."""
    queues = []
    for region in Region.objects.only("code"):
        region_scrape.apply_async(
            (region.code,), queue=region.queue, expires=max(10.0, settings.BSN_METERING_SCRAPE_INTERVAL)
        )
        queues.append(region.queue)
    return queues


@shared_task
def region_scrape(region_code: str) -> dict:
    return services.region_scrape(region_code)

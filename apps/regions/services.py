"""Region writes shared by the demo commands (``bsn_demo``, ``dcep_setup``)."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from apps.regions.models import Region

DEMO_REGIONS = [
    ("cn-beijing", "Beijing", "Beijing"),
    ("cn-shanghai", "Shanghai", "Shanghai"),
    ("cn-guangzhou", "Guangzhou", "Guangzhou"),
]


def driver_pick(requested: str) -> str:
    """``docker`` or ``process``; ``auto`` is Docker when an engine answers at BSN_DOCKER_BASE_URL."""
    if requested != "auto":
        return requested
    from apps.runtime.drivers import docker_engine_answers

    return Region.Driver.DOCKER if docker_engine_answers(settings.BSN_DOCKER_BASE_URL) else Region.Driver.PROCESS


def demo_regions_seed(*, driver: str) -> list[Region]:
    """The three demo regions, active, on ``driver`` (created or reset; idempotent)."""
    regions = []
    with transaction.atomic():
        for code, name, city in DEMO_REGIONS:
            region, _ = Region.objects.update_or_create(
                code=code,
                defaults={
                    "name": name,
                    "city": city,
                    "country": "CN",
                    "driver": driver,
                    "operator": "bsn demo",
                    "status": Region.Status.ACTIVE,
                },
            )
            regions.append(region)
    return regions

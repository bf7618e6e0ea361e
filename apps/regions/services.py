"""Region writes: registering a region (``bsn_region add``) and the demo regions (``bsn_demo``, ``dcep_setup``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from apps.audit.services import audit_record
from apps.regions.engine_tls import EngineTLS, EngineTLSInvalid, check_engine_access
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


class RegionInvalid(ValueError):
    """The region cannot be registered as given; ``errors`` maps field to messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


def region_add(*, code: str, tls: EngineTLS | None = None, actor_label: str = "", **fields: Any) -> Region:
    """Register a region. An engine reached over the network needs TLS material
    (``engine_tls.check_engine_access``); the material is stored encrypted. Audited."""
    if Region.objects.filter(code=code).exists():
        raise RegionInvalid({"code": [f"region {code} already exists"]})
    region = Region(code=code, **fields)
    region.name = region.name or code
    try:
        check_engine_access(
            region.driver, region.docker_base_url, tls, allow_insecure=settings.BSN_ALLOW_INSECURE_ENGINES
        )
    except EngineTLSInvalid as exc:
        raise RegionInvalid({"tls": [str(exc)]}) from None
    region.set_tls(tls)
    try:
        region.full_clean()
    except ValidationError as exc:
        raise RegionInvalid(exc.message_dict) from None
    region.save()
    audit_record(
        action="region.add",
        object_type="region",
        object_id=code,
        actor_label=actor_label,
        data={"driver": region.driver, "tls": tls.describe() if tls else None},
    )
    return region


def region_set_status(*, code: str, status: str, actor=None, actor_label: str = "", request=None) -> Region:
    """Drain a region (no new nodes are placed on it; its nodes keep running) or enable it
    again (``bsn_region drain|enable`` and the console's actions). Audited as
    ``region.<status>`` with the status before. ``unavailable`` is the reconciler's
    observation, never set by hand."""
    if status not in (Region.Status.ACTIVE, Region.Status.DRAINING):
        raise RegionInvalid({"status": [f"'{status}' is observed by the reconciler, not set: use active or draining"]})
    with transaction.atomic():
        region = Region.objects.select_for_update().filter(code=code).first()
        if region is None:
            raise RegionInvalid({"code": [f"no region {code}"]})
        before = region.status
        region.status = status
        region.save(update_fields=["status", "updated_at"])
        audit_record(
            action=f"region.{status}",
            object_type="region",
            object_id=code,
            actor=actor,
            actor_label=actor_label,
            data={"before": before},
            request=request,
        )
    return region


# What an operator may change on a registered region: its description and capacity. Where
# the engine is (driver, URL, TLS, publish host/mode) is fixed at `bsn_region add`: changing
# it under running nodes would make their recorded endpoints lie.
REGION_EDITABLE = (
    "name",
    "city",
    "country",
    "operator",
    "max_nodes",
    "cpu_capacity",
    "memory_capacity_mb",
    "warm_nodes",  # its worker makes or drops warm nodes at once (apps/chainapps/warm.py)
)


def region_update(*, region: Region, actor=None, actor_label: str = "", request=None, **changes: Any) -> Region:
    """Change a region's description or capacity (the console's change form); audited with the values before."""
    unknown = set(changes) - set(REGION_EDITABLE)
    if unknown:
        raise RegionInvalid({name: ["not editable: fixed when the region was added"] for name in sorted(unknown)})
    if not changes:
        return region
    with transaction.atomic():
        locked = Region.objects.select_for_update().get(pk=region.pk)
        before = {name: getattr(locked, name) for name in changes}
        for name, value in changes.items():
            setattr(locked, name, value)
        try:
            locked.full_clean()
        except ValidationError as exc:
            raise RegionInvalid(exc.message_dict) from None
        locked.save(update_fields=[*changes, "updated_at"])
        audit_record(
            action="region.update",
            object_type="region",
            object_id=locked.code,
            actor=actor,
            actor_label=actor_label,
            data={**changes, "before": before},
            request=request,
        )
        if "warm_nodes" in changes:
            from apps.chainapps.warm import warm_fill_later

            warm_fill_later([locked], always=True)
    return locked

"""Reads of metering: quota use, usage over a range (per bucket, per app), platform totals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Q, Sum
from django.utils import timezone

from apps.chainapps.models import ChainApp, LedgerNode
from apps.metering import counters
from apps.metering.models import NodeMeter, UsageHour

COUNTERS = ("tx_committed", "tx_failed", "tx_rejected", "bytes_in", "bytes_out", "node_seconds")
STEPS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


def app_storage_in_use(*, app: ChainApp) -> int | None:
    """The app's storage as its nodes last reported it: the largest node's bytes (every
    node holds the whole chain); None before any reading."""
    values = [
        v
        for v in NodeMeter.objects.filter(node__app=app)
        .exclude(node__state=LedgerNode.State.REMOVED)
        .values_list("storage_bytes", flat=True)
        if v is not None
    ]
    return max(values) if values else None


def tenant_storage_in_use(*, tenant) -> int | None:
    """Its live apps' ``app_storage_in_use`` added up; None before any reading."""
    per_app: dict = {}
    for app_id, value in (
        NodeMeter.objects.filter(node__app__tenant=tenant, node__app__deleted_at__isnull=True)
        .exclude(node__state=LedgerNode.State.REMOVED)
        .exclude(storage_bytes=None)
        .values_list("node__app_id", "storage_bytes")
    ):
        per_app[app_id] = max(value, per_app.get(app_id, 0))
    return sum(per_app.values()) if per_app else None


def volume_today(*, tenant) -> int | None:
    """Request bytes the gateway accepted for ``tenant`` this UTC day; None if unknown."""
    try:
        return counters.store().volume_used(str(tenant.pk), timezone.now())
    except counters.Unavailable:
        return None


# --------------------------------------------------------------------------- ranges


def align(moment: datetime, step: str) -> datetime:
    """The start of the ``step`` (UTC) that holds ``moment``."""
    moment = counters.hour_of(moment)
    return moment.replace(hour=0) if step == "day" else moment


@dataclass(frozen=True)
class Range:
    start: datetime  # inclusive, aligned
    end: datetime  # exclusive, aligned
    step: str

    @property
    def buckets(self) -> int:
        return int((self.end - self.start) / STEPS[self.step])


def usage_range(*, start: datetime | None, end: datetime | None, step: str) -> Range:
    """``[start, end)`` widened to whole steps; defaults: the last 24 steps up to now."""
    end = end or timezone.now()
    aligned_end = align(end, step)
    if aligned_end < end:
        aligned_end += STEPS[step]
    aligned_start = align(start, step) if start else aligned_end - 24 * STEPS[step]
    return Range(aligned_start, aligned_end, step)


def _zero() -> dict:
    return {**dict.fromkeys(COUNTERS, 0), "storage_bytes": 0}


def _fold(into: dict, row: dict, storage: int) -> None:
    for name in COUNTERS:
        into[name] += row.get(name) or 0
    into["storage_bytes"] = max(into["storage_bytes"], storage)


def app_usage(*, app: ChainApp, rng: Range) -> dict:
    """Per bucket (every one of the range, empty ones too) and in total: counters added up;
    ``storage_bytes`` the largest hourly total over the app's regions."""
    rows = (
        UsageHour.objects.filter(app=app, hour__gte=rng.start, hour__lt=rng.end)
        .values("hour")
        .annotate(**{name: Sum(name) for name in COUNTERS}, storage=Sum("storage_bytes"))
        .order_by("hour")
    )
    buckets = {rng.start + i * STEPS[rng.step]: _zero() for i in range(rng.buckets)}
    totals = _zero()
    for row in rows:
        bucket = buckets[align(row["hour"], rng.step)]
        _fold(bucket, row, row["storage"] or 0)
        _fold(totals, row, row["storage"] or 0)
    return {
        "buckets": [{"start": start.astimezone(UTC), **values} for start, values in buckets.items()],
        "totals": totals,
    }


def tenant_usage_by_app(*, tenant, rng: Range) -> dict:
    """Per app of the tenant (live ones, and deleted ones that have usage in the range) and
    in total: counters added up, ``storage_bytes`` the app's largest hourly total."""
    in_range = UsageHour.objects.filter(app__tenant=tenant, hour__gte=rng.start, hour__lt=rng.end)
    sums = {
        row["app"]: row
        for row in in_range.values("app").annotate(**{name: Sum(name) for name in COUNTERS}).order_by("app")
    }
    peaks: dict = {}
    for row in (
        in_range.filter(storage_bytes__gt=0)
        .values("app", "hour")
        .annotate(storage=Sum("storage_bytes"))
        .order_by("app", "hour")
    ):
        peaks[row["app"]] = max(peaks.get(row["app"], 0), row["storage"])
    apps = ChainApp.objects.filter(Q(tenant=tenant) & (Q(deleted_at__isnull=True) | Q(pk__in=list(sums)))).order_by(
        "name", "created_at"
    )
    totals = _zero()
    out = []
    for app in apps:
        values = _zero()
        _fold(values, sums.get(app.pk, {}), peaks.get(app.pk, 0))
        _fold(totals, values, 0)
        totals["storage_bytes"] += values["storage_bytes"]
        out.append({"app": app.pk, "name": app.name, "deleted": app.deleted_at is not None, **values})
    return {"apps": out, "totals": totals}


def platform_totals() -> tuple[list[dict], list[dict]]:
    """For /metrics: counters per app and region since metering began, and storage per node."""
    counters_rows = list(
        UsageHour.objects.values("app_id", "app__name", "app__tenant__slug", "region__code")
        .annotate(**{name: Sum(name) for name in COUNTERS})
        .order_by("app__tenant__slug", "app__name", "region__code")
    )
    storage_rows = list(
        NodeMeter.objects.exclude(storage_bytes=None)
        .exclude(node__state=LedgerNode.State.REMOVED)
        .values("node__app_id", "node__app__name", "node__app__tenant__slug", "node__region__code", "storage_bytes")
        .order_by("node__app__tenant__slug", "node__app__name", "node__region__code")
    )
    return counters_rows, storage_rows

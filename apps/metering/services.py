"""Writes of metering: gateway counters into UsageHour, node observations, quota admission.

Design: docs/metering.md. The gateway's counts are kept in Redis by every web process
(``counters``) and added here by the flush; node seconds and storage come from the
scrape of each region's running nodes.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.chainapps.models import ChainApp, LedgerNode
from apps.common.errors import DomainError
from apps.metering import counters
from apps.metering.models import CounterFlush, NodeMeter, UsageHour
from apps.metering.selectors import app_storage_in_use
from apps.regions.models import Region

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


# --------------------------------------------------------------------------- UsageHour


def _row(app_id, region_id, hour: datetime) -> int:
    """The id of the (app, region, hour) row, made if missing (a concurrent maker wins the race)."""
    row, _ = UsageHour.objects.get_or_create(app_id=app_id, region_id=region_id, hour=hour)
    return row.pk


def usage_add(*, rows: dict[tuple[str, int], dict[str, int]], hour: datetime) -> int:
    """Add counts to their hour's rows with ``F()`` (concurrent adders add up). Counts of an
    app or region that no longer exists are dropped. The number of rows touched."""
    if not rows:
        return 0
    app_ids = set(ChainApp.objects.filter(pk__in={a for a, _ in rows}).values_list("pk", flat=True))
    region_ids = set(Region.objects.filter(pk__in={r for _, r in rows}).values_list("pk", flat=True))
    known = {str(a) for a in app_ids}
    touched = 0
    with transaction.atomic():
        for (app_id, region_id), values in sorted(rows.items()):
            if app_id not in known or region_id not in region_ids:
                logger.info("metering: dropping counts of a gone app/region %s/%s: %s", app_id, region_id, values)
                continue
            pk = _row(app_id, region_id, hour)
            UsageHour.objects.filter(pk=pk).update(**{name: F(name) + n for name, n in values.items()})
            touched += 1
    return touched


def _batch_hour(key: str) -> datetime:
    tag = key.split(":")[-2]
    return datetime.strptime(tag, "%Y%m%d%H").replace(tzinfo=UTC)


def counters_flush() -> dict:
    """Move the gateway counters from Redis into UsageHour, exactly once (counters module doc)."""
    store = counters.store()
    store.detach_hours()
    applied = skipped = 0
    for key in store.batches():
        raw = store.read_batch(key)
        if raw:
            rows = counters.parse_batch(raw)
            try:
                with transaction.atomic():
                    # The claim first: a concurrent flusher of the same batch waits here and
                    # then fails on the unique key; a batch added before is refused here.
                    CounterFlush.objects.create(key=key, fields=len(raw))
                    usage_add(rows=rows, hour=_batch_hour(key))
                applied += 1
            except IntegrityError:
                if not CounterFlush.objects.filter(key=key).exists():
                    raise  # not the claim (e.g. a row's app removed meanwhile): the batch stays for the next flush
                skipped += 1  # added already (by another flusher, or before a lost DEL)
        store.drop_batch(key)
    keep = timezone.now() - timedelta(days=settings.BSN_METERING_FLUSH_KEEP_DAYS)
    CounterFlush.objects.filter(applied_at__lt=keep).delete()
    return {"applied": applied, "already": skipped}


# --------------------------------------------------------------------------- nodes


def _split_by_hour(start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """``[start, end)`` as (hour, whole seconds) pieces; seconds are rounded per piece from
    the absolute times, so consecutive intervals never lose or double a second."""
    pieces = []
    cursor = start
    while cursor < end:
        hour = counters.hour_of(cursor)
        nxt = min(end, hour + timedelta(hours=1))
        seconds = math.floor(nxt.timestamp()) - math.floor(cursor.timestamp())
        if seconds:
            pieces.append((hour, seconds))
        cursor = nxt
    return pieces


def node_observe(*, node: LedgerNode, running: bool, storage_bytes: int | None, error: str = "") -> dict:
    """Record one scrape of ``node``: seconds it ran since the last one (both passes saw it
    running; at most ``BSN_METERING_MAX_GAP`` seconds, split over the hours they fall in),
    and its storage (UsageHour of this hour gets the last reading, also while the node is
    stopped: its volume still holds the data)."""
    NodeMeter.objects.get_or_create(node=node, defaults={"observed_at": timezone.now(), "running": False})
    added = 0
    with transaction.atomic():
        meter = NodeMeter.objects.select_for_update().get(node=node)
        now = timezone.now()  # after the lock: a pass that waited never counts backwards
        if meter.running and running and now > meter.observed_at:
            start = max(meter.observed_at, now - timedelta(seconds=settings.BSN_METERING_MAX_GAP))
            for hour, seconds in _split_by_hour(start, now):
                pk = _row(node.app_id, node.region_id, hour)
                UsageHour.objects.filter(pk=pk).update(node_seconds=F("node_seconds") + seconds)
                added += seconds
        meter.observed_at = max(now, meter.observed_at)
        meter.running = running
        meter.last_error = error[:300]
        if storage_bytes is not None:
            meter.storage_bytes, meter.storage_read_at = storage_bytes, now
        meter.save()
        if meter.storage_bytes is not None:  # a stopped node's volume still holds its data: its hours carry it
            pk = _row(node.app_id, node.region_id, counters.hour_of(now))
            UsageHour.objects.filter(pk=pk).update(storage_bytes=meter.storage_bytes)
    return {"node_seconds": added, "storage_bytes": storage_bytes}


def storage_read(node: LedgerNode) -> tuple[int | None, str]:
    """``bsn_storage_bytes`` from the node's ``/metrics`` (signed, reply proven): (bytes, error)."""
    from prometheus_client.parser import text_string_to_metric_families

    from apps.chainapps.node_auth import node_auth
    from apps.runtime.nodeapi import NodeCallError, node_call

    auth = node_auth(node)
    if auth is None or not node.endpoint:
        return None, "no credential or endpoint"
    try:
        reply = node_call(
            node.endpoint, "GET", "/metrics", auth=auth, connect_timeout=1.0, read_timeout=3.0, as_text=True
        )
    except NodeCallError as exc:
        return None, str(exc)
    if reply.status != 200 or not isinstance(reply.body, str):
        return None, f"/metrics answered HTTP {reply.status}"
    try:
        for family in text_string_to_metric_families(reply.body):
            if family.name == "bsn_storage_bytes" and family.samples:
                return int(family.samples[0].value), ""
    except ValueError as exc:
        return None, f"/metrics is not Prometheus text: {exc}"
    return None, "no bsn_storage_bytes in /metrics"


def region_scrape(region_code: str) -> dict:
    """One pass over a region's nodes (its worker runs it): storage of the running ones
    (read in parallel, a small pool), then node seconds and storage recorded per node."""
    nodes = list(
        LedgerNode.objects.filter(region__code=region_code, app__deleted_at__isnull=True)
        .exclude(state=LedgerNode.State.REMOVED)
        .select_related("region")
    )
    running = [n for n in nodes if n.state == LedgerNode.State.RUNNING and n.endpoint]
    readings: dict = {}
    if running:
        with ThreadPoolExecutor(max_workers=min(settings.BSN_METERING_SCRAPE_THREADS, len(running))) as pool:
            readings = dict(zip([n.pk for n in running], pool.map(storage_read, running), strict=True))
    summary = {"nodes": len(nodes), "read": 0, "node_seconds": 0}
    for node in nodes:
        value, error = readings.get(node.pk, (None, ""))
        try:
            result = node_observe(
                node=node, running=node.state == LedgerNode.State.RUNNING, storage_bytes=value, error=error
            )
        except (IntegrityError, NodeMeter.DoesNotExist):  # the node (or its app) was removed during the pass
            continue
        summary["read"] += value is not None
        summary["node_seconds"] += result["node_seconds"]
    return summary


# --------------------------------------------------------------------------- quotas


def _seconds_to_midnight(now: datetime) -> int:
    midnight = (now.astimezone(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((midnight - now).total_seconds()))


def quota_admit(*, app: ChainApp, nbytes: int) -> None:
    """Storage and daily volume, before a tenant's submission goes anywhere.

    Storage: refused (403 ``storage-quota-exceeded``) when the app's last reading plus this
    request would pass ``storage_mb``. Volume: the request's bytes are added to the
    tenant's counter of the UTC day, or refused (429 ``daily-volume-exceeded``, Retry-After
    until midnight UTC) adding nothing. Undo the volume with ``volume_refund`` if a later
    check refuses the request.
    """
    quota = app.storage_mb * MIB
    used = app_storage_in_use(app=app) or 0
    if used + nbytes > quota:
        raise DomainError(
            f"The app's storage quota of {app.storage_mb} MiB is used up ({used} bytes stored); nothing was sent. "
            "Platform staff can raise storage_mb.",
            code="storage-quota-exceeded",
            status=403,
            extra={"storage_mb": app.storage_mb, "storage_in_use_bytes": used},
        )
    tenant = app.tenant
    limit = tenant.max_daily_volume_mb * MIB
    now = timezone.now()
    try:
        ok, used_today = counters.store().volume_take(str(tenant.pk), nbytes, limit, now)
    except counters.Unavailable as exc:
        logger.warning("volume counter unavailable: %s", exc)
        raise DomainError(
            "The quota service does not answer; nothing was sent. Retry shortly.",
            code="quota-unavailable",
            status=503,
            retry_after=1,
        ) from None
    if not ok:
        wait = _seconds_to_midnight(now)
        raise DomainError(
            f"The tenant's daily data volume of {tenant.max_daily_volume_mb} MiB is used up "
            f"({used_today} bytes today); it resets at midnight UTC, in {wait} s.",
            code="daily-volume-exceeded",
            status=429,
            extra={"max_daily_volume_mb": tenant.max_daily_volume_mb, "volume_today_bytes": used_today},
            retry_after=wait,
        )


def volume_refund(*, app: ChainApp, nbytes: int) -> None:
    counters.store().volume_refund(str(app.tenant_id), nbytes, timezone.now())

"""What the operator console's dashboard shows: the platform's health, read from the
database (what workers and the reconciler last observed) and two cheap live checks (the
database and the broker). The web process calls no engine and no ledger node from here."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.cache import cache
from django.db.models import Count
from django.utils import timezone

from apps.audit.models import AuditChainHead
from apps.audit.services import audit_verify
from apps.chainapps.models import ChainApp, Operation
from apps.chainapps.selectors import regions_with_load
from apps.common.health import readiness_checks
from apps.common.models import installation_id
from apps.ordering.selectors import ordering_status
from apps.regions.models import Region
from apps.tenants.models import Tenant

AUDIT_VERIFY_CACHE_SECONDS = 60
FAILED_WINDOW = timedelta(hours=24)


def audit_chain_check(*, fresh: bool = False) -> dict[str, Any]:
    """``audit_verify`` over the whole chain, remembered for a minute per installation and
    chain head (the walk is O(events); a dashboard reload should not repeat it). An edit of
    an old event does not move the head, so the dashboard may show it up to a minute late;
    the "verify" page (``fresh``) always walks again."""
    head = AuditChainHead.objects.filter(pk=1).values_list("sequence", "hash").first() or (0, "")
    key = f"bsn:console:audit-verify:{installation_id()}:{head[0]}:{head[1]}"
    result = None if fresh else cache.get(key)
    if result is None:
        started = timezone.now()
        ok, count, problem = audit_verify()
        result = {
            "ok": ok,
            "events": count,
            "problem": problem,
            "checked_at": timezone.now(),
            "ms": int((timezone.now() - started).total_seconds() * 1000),
        }
        cache.set(key, result, AUDIT_VERIFY_CACHE_SECONDS)
    return result


def dcep_check() -> dict[str, Any]:
    """The supply and the journal's invariants (no chain read: that is ``dcep_audit``)."""
    from apps.dcep.models import Institution
    from apps.dcep.selectors import supply_report

    if not Institution.objects.exists():
        return {"set_up": False, "ok": True, "checks": []}
    report = supply_report(None)
    return {"set_up": True, **report}


def platform_health() -> dict[str, Any]:
    """Everything the dashboard shows, with an overall verdict and the reasons against it."""
    now = timezone.now()
    regions = []
    for region in regions_with_load():
        regions.append({"region": region, "used": region.node_count, "max": region.max_nodes})
    region_status = {s: 0 for s in Region.Status.values}
    for row in regions:
        region_status[row["region"].status] += 1

    live_apps = ChainApp.objects.filter(deleted_at__isnull=True)
    app_status = dict(live_apps.values("status").annotate(n=Count("id")).values_list("status", "n"))
    failed = Operation.objects.filter(status=Operation.Status.FAILED, finished_at__gte=now - FAILED_WINDOW)
    failed_recent = list(failed.select_related("app", "tenant").order_by("-finished_at")[:10])

    ordering = ordering_status(probe=False)
    dcep = dcep_check()
    audit = audit_chain_check()
    services = readiness_checks()
    tenants = dict(Tenant.objects.values("is_active").annotate(n=Count("id")).values_list("is_active", "n"))

    problems = []
    if region_status[Region.Status.UNAVAILABLE]:
        problems.append(f"{region_status[Region.Status.UNAVAILABLE]} region(s) unavailable")
    full = [r["region"].code for r in regions if r["max"] and r["used"] >= r["max"]]
    if full:
        problems.append(f"region(s) at capacity: {', '.join(full)}")
    for state in (ChainApp.Status.FAILED, ChainApp.Status.DEGRADED):
        if app_status.get(state):
            problems.append(f"{app_status[state]} app(s) {state}")
    failed_count = failed.count()
    if failed_count:
        problems.append(f"{failed_count} operation(s) failed in the last 24 h")
    if ordering["provisioned"] and ordering["state"] != "healthy":
        problems.append(f"ordering service {ordering['state']}")
    if not dcep["ok"]:
        problems.append("a DCEP invariant does not hold")
    if not audit["ok"]:
        problems.append(f"audit chain broken: {audit['problem']}")
    for name, value in services.items():
        if value != "ok":
            problems.append(f"{name}: {value}")
    return {
        "healthy": not problems,
        "problems": problems,
        "regions": regions,
        "region_status": region_status,
        "app_status": [(s, app_status.get(s, 0)) for s in ChainApp.Status.values if s != ChainApp.Status.DELETED],
        "apps_total": sum(app_status.values()),
        "failed_count": failed_count,
        "failed_recent": failed_recent,
        "ordering": ordering,
        "dcep": dcep,
        "audit": audit,
        "services": services,
        "tenants_active": tenants.get(True, 0),
        "tenants_inactive": tenants.get(False, 0),
        "generated_at": now,
    }

"""Reads about chain apps, nodes, operations and usage."""

from __future__ import annotations

from django.db.models import Count, IntegerField, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce

from apps.chainapps.models import ChainApp, LedgerNode, Operation, WarmNode
from apps.regions.models import Region
from apps.tenants.models import Tenant


def tenant_usage(*, tenant: Tenant) -> dict[str, int]:
    apps = ChainApp.objects.for_tenant(tenant).filter(deleted_at__isnull=True)
    totals = apps.aggregate(tps=Sum("tps_quota"), storage=Sum("storage_mb"))
    return {
        "apps": apps.count(),
        "nodes": LedgerNode.objects.filter(app__in=apps).exclude(state=LedgerNode.State.REMOVED).count(),
        "tps": totals["tps"] or 0,
        "storage_mb": totals["storage"] or 0,
    }


def region_node_counts() -> dict[int, int]:
    """Live nodes per region id (what counts against a region's capacity); a node scaled
    away (removed) no longer counts."""
    live = LedgerNode.objects.filter(app__deleted_at__isnull=True).exclude(state=LedgerNode.State.REMOVED)
    rows = live.values("region_id").annotate(n=Count("id"))
    return {row["region_id"]: row["n"] for row in rows}


def regions_with_load():
    """Regions with ``node_count`` (live nodes) and ``warm_ready`` (warm nodes ready to be
    claimed; a subquery, so that it does not multiply the node join)."""
    live = Q(nodes__app__deleted_at__isnull=True) & ~Q(nodes__state=LedgerNode.State.REMOVED)
    ready = (
        WarmNode.objects.filter(region=OuterRef("pk"), state=WarmNode.State.READY)
        .order_by()
        .values("region")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Region.objects.annotate(
        node_count=Count("nodes", filter=live),
        warm_ready=Coalesce(Subquery(ready, output_field=IntegerField()), 0),
    ).order_by("code")


def region_running_counts() -> dict:
    """region id -> (nodes whose app is wanted running, of those the ones observed running)."""
    rows = (
        LedgerNode.objects.filter(app__deleted_at__isnull=True, app__desired_state=ChainApp.DesiredState.RUNNING)
        .exclude(state=LedgerNode.State.REMOVED)
        .values("region_id")
        .annotate(wanted=Count("id"), running=Count("id", filter=Q(state=LedgerNode.State.RUNNING)))
    )
    return {row["region_id"]: (row["wanted"], row["running"]) for row in rows}


def app_open_operation(*, app: ChainApp) -> Operation | None:
    return Operation.objects.filter(app=app).open().order_by("created_at").first()


def app_nodes(*, app: ChainApp):
    """The app's nodes as its tenant sees them (the API's nodes action, the portal's app
    page): every node, removed ones included, with what their serializers read."""
    return (
        LedgerNode.objects.filter(app=app)
        .select_related("region", "framework", "app__framework")
        .order_by("region__code")
    )

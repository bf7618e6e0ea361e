"""The first page after signing in: the tenant's apps, nodes per region, recent operations,
quota use and, for a DCEP participant, wallet balances."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Count, Sum

from apps.chainapps.models import ChainApp, LedgerNode, Operation
from apps.chainapps.selectors import tenant_usage
from apps.dcep.selectors import wallets_visible_to
from apps.portal.views.base import PortalView


def quota_rows(tenant) -> list[dict]:
    """Each quota with its use and the share used (for a bar)."""
    used = tenant_usage(tenant=tenant)
    rows = []
    for label, key, limit, unit in (
        ("Chain apps", "apps", tenant.max_apps, ""),
        ("Ledger nodes", "nodes", tenant.max_nodes, ""),
        ("TPS reserved", "tps", tenant.max_tps, "tx/s"),
        ("Storage reserved", "storage_mb", tenant.max_storage_mb, "MB"),
    ):
        value = used[key]
        rows.append(
            {
                "label": label,
                "used": value,
                "limit": limit,
                "unit": unit,
                "percent": min(100, round(100 * value / limit)) if limit else 100,
            }
        )
    return rows


class DashboardView(PortalView):
    section = "dashboard"

    def get(self, request):
        apps = list(
            self.scope(ChainApp.objects.filter(deleted_at__isnull=True)).select_related("framework").order_by("name")
        )
        nodes = (
            LedgerNode.objects.filter(app__in=[a.pk for a in apps])
            .exclude(state=LedgerNode.State.REMOVED)
            .select_related("region", "app")
            .order_by("region__code", "app__name")
        )
        columns: dict = {}  # region code -> region, the grid's columns
        by_app: dict = defaultdict(dict)
        for node in nodes:
            columns.setdefault(node.region.code, node.region)
            by_app[node.app_id][node.region.code] = node
        regions = [columns[code] for code in sorted(columns)]
        rows = [{"app": app, "cells": [by_app[app.pk].get(region.code) for region in regions]} for app in apps]
        operations = (
            self.scope(Operation.objects.all(), "app__tenant").select_related("app").order_by("-created_at")[:8]
        )
        wallets = wallets_visible_to(self.tenant).order_by("number")
        wallet_total = wallets.aggregate(total=Sum("balance"), held=Sum("held"), count=Count("id"))
        return self.render(
            "portal/dashboard.html",
            {
                "rows": rows,
                "regions": regions,
                "operations": operations,
                "quotas": quota_rows(self.tenant),
                "wallets": list(wallets[:5]),
                "wallet_count": wallet_total["count"],
                "wallet_total": (wallet_total["total"] or 0) + (wallet_total["held"] or 0),
            },
        )

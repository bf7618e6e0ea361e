"""Billing reads: a tenant's invoices, the price in force, an app's suspension."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from apps.billing.models import Invoice, InvoiceLine, PriceList, SuspendedApp


def invoices_of(tenant, *, with_lines: bool = False) -> QuerySet[Invoice]:
    """The tenant's invoices; ``with_lines``: and their lines (one query more for any number of invoices)."""
    invoices = Invoice.objects.filter(tenant=tenant).select_related("tenant")
    if not with_lines:
        return invoices
    lines = InvoiceLine.objects.select_related("region").order_by("app_name", "region__code", "period_start", "id")
    return invoices.prefetch_related(Prefetch("lines", queryset=lines))


def price_lists() -> QuerySet[PriceList]:
    return PriceList.objects.select_related("region").order_by("region__code", "-valid_from")


def app_suspension(app) -> SuspendedApp | None:
    """The open suspension that stopped ``app`` (for the app's status line), if any."""
    return (
        SuspendedApp.objects.select_related("suspension")
        .filter(app=app, suspension__ended_at__isnull=True, stop_operation__isnull=False, resumed_at__isnull=True)
        .first()
    )

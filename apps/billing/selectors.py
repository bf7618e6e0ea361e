"""Billing reads: a tenant's invoices, the price in force, an app's suspension."""

from __future__ import annotations

from django.db.models import Count, Min, Prefetch, QuerySet, Sum

from apps.billing.models import BillingAccount, Invoice, InvoiceLine, PriceList, SuspendedApp, Suspension


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


def billing_status(tenant) -> dict:
    """What the tenant's finance people want on one screen: who pays, what is owed, suspended or not."""
    from apps.billing.services import payer_wallet

    wallet = payer_wallet(tenant)
    unpaid = Invoice.objects.filter(tenant=tenant, status=Invoice.Status.ISSUED).aggregate(
        n=Count("pk"), fen=Sum("total_fen"), due=Min("due_at")
    )
    suspension = Suspension.objects.filter(tenant=tenant, ended_at__isnull=True).first()
    return {
        "wallet": wallet.number if wallet else None,
        "wallet_chosen": BillingAccount.objects.filter(tenant=tenant).exists(),
        "unpaid": unpaid["n"],
        "unpaid_fen": unpaid["fen"] or 0,
        "next_due_at": unpaid["due"],
        "suspended": {"reason": suspension.reason, "since": suspension.started_at.isoformat()} if suspension else None,
    }

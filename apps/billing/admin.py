"""The operator's billing screens: price lists (added through the service), invoices read-only,
which wallet pays for a tenant, suspensions read-only."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from apps.billing import services
from apps.billing.models import BillingAccount, Invoice, InvoiceLine, PriceList, SuspendedApp, Suspension
from apps.common.admin import ReadOnlyAdmin, ReadOnlyInline
from apps.common.errors import DomainError


class PriceListForm(forms.ModelForm):
    class Meta:
        model = PriceList
        fields = ["region", "valid_from", "node_hour_fen", "per_1000_tx_fen", "gb_month_fen", "operator_share_bp"]

    def clean(self):
        data = super().clean()
        if data.get("valid_from") is not None and data.get("operator_share_bp") is not None:
            try:
                services.price_check(valid_from=data["valid_from"], operator_share_bp=data["operator_share_bp"])
            except DomainError as exc:
                raise forms.ValidationError(exc.detail) from exc
        return data


@admin.register(PriceList)
class PriceListAdmin(admin.ModelAdmin):
    """Add only (a price change is a new row from a later hour); saved through ``price_set`` (checked, audited)."""

    form = PriceListForm

    list_display = ["region", "valid_from", "node_hour_fen", "per_1000_tx_fen", "gb_month_fen", "operator_share_bp"]
    list_filter = ["region"]
    list_select_related = ["region"]
    fields = ["region", "valid_from", "node_hour_fen", "per_1000_tx_fen", "gb_month_fen", "operator_share_bp"]

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        # The form checked the rules (and the unique hour); a race lost here is an error page, never a silent miss.
        saved = services.price_set(
            region_code=obj.region.code,
            valid_from=obj.valid_from,
            node_hour_fen=obj.node_hour_fen,
            per_1000_tx_fen=obj.per_1000_tx_fen,
            gb_month_fen=obj.gb_month_fen,
            operator_share_bp=obj.operator_share_bp,
            actor=request.user,
            request=request,
        )
        obj.pk = saved.pk


class InvoiceLineInline(ReadOnlyInline):
    model = InvoiceLine
    fields = [
        "app_name",
        "region",
        "region_operator",
        "kind",
        "quantity",
        "unit_price_fen",
        "amount_fen",
        "operator_share_bp",
        "operator_share_fen",
        "period_start",
        "period_end",
    ]
    readonly_fields = fields


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    list_display = ["number", "tenant", "month", "total_fen", "operator_share_fen", "status", "due_at", "attempts"]
    list_filter = ["status", "month"]
    search_fields = ["number", "tenant__slug"]
    list_select_related = ["tenant"]
    inlines = [InvoiceLineInline]
    actions = ["pay_now"]

    @admin.action(description="Attempt payment now")
    def pay_now(self, request, queryset):
        for invoice in queryset:
            paid = services.invoice_pay(invoice_id=invoice.pk, now=timezone.now(), force=True)
            messages.info(request, f"{paid.number}: {paid.status} {paid.last_error_code}".strip())


@admin.register(BillingAccount)
class BillingAccountAdmin(admin.ModelAdmin):
    list_display = ["tenant", "wallet"]
    raw_id_fields = ["wallet"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a tenant's paying wallet is replaced through billing_account_set, never removed by hand

    def save_model(self, request, obj, form, change):
        saved = services.billing_account_set(tenant=obj.tenant, wallet_number=obj.wallet.number, actor=request.user)
        obj.pk = saved.pk

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)

        class Checked(form):
            def clean(self):
                data = super().clean()
                tenant, wallet = data.get("tenant"), data.get("wallet")
                if tenant and wallet and (wallet.holder_tenant_id != tenant.pk or wallet.wallet_kind != "corporate"):
                    raise forms.ValidationError(f"wallet {wallet.number} is not a corporate wallet of {tenant.slug}.")
                return data

        return Checked


class SuspendedAppInline(ReadOnlyInline):
    model = SuspendedApp
    readonly_fields = ["app", "stop_operation", "resume_operation", "resumed_at", "last_error"]
    fields = readonly_fields


@admin.register(Suspension)
class SuspensionAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "invoice", "started_at", "ended_at", "reason"]
    list_filter = ["ended_at"]
    list_select_related = ["tenant", "invoice"]
    inlines = [SuspendedAppInline]

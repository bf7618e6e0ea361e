"""The operator's view of DCEP: institutions, wallets (freeze / unfreeze), and the journal read-only.

Money never moves here: transfers, holds and settlements are read-only (the journal is
written only by the services, and on PostgreSQL the database refuses edits anyway), and
a wallet's status changes through ``services.wallet_update`` like the API's PATCH, so the
audit trail and the rules are the same.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.template.response import TemplateResponse
from django.urls import path

from apps.common.admin import ReadOnlyAdmin
from apps.common.errors import DomainError
from apps.dcep import services
from apps.dcep.models import Account, Hold, HoldRelease, Institution, Settlement, Transfer, Wallet


@admin.register(Institution)
class InstitutionAdmin(ReadOnlyAdmin):
    """Institutions are made by dcep_setup / institution_ensure (they come with accounts,
    keys and a home region their tier-1 nodes run in): nothing here is edited by hand."""

    list_display = ["slug", "kind", "tenant", "home_region", "created_at"]
    list_filter = ["kind", "home_region"]
    search_fields = ["tenant__slug", "tenant__name"]
    list_select_related = ["tenant", "home_region"]
    exclude = ["signing_private_key_encrypted"]


def _set_status(modeladmin, request, queryset: QuerySet[Wallet], status: str) -> None:
    changed, refused = 0, []
    for wallet in queryset.select_related("operator__tenant"):
        actor = services.Actor(tenant=wallet.operator.tenant, institution=wallet.operator, user=request.user)
        try:
            services.wallet_update(actor=actor, number=wallet.number, status=status)
            changed += 1
        except DomainError as exc:
            refused.append(f"{wallet.number}: {exc.detail}")
    if changed:
        modeladmin.message_user(request, f"{changed} wallet(s) now {status}.", messages.SUCCESS)
    for line in refused:
        modeladmin.message_user(request, line, messages.ERROR)


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = ["number", "holder_name", "operator", "wallet_kind", "tier", "status", "balance", "held"]
    list_filter = ["status", "tier", "wallet_kind", "operator"]
    search_fields = ["number", "holder_name", "holder_tenant__slug"]
    list_select_related = ["operator__tenant", "holder_tenant"]
    actions = ["freeze", "unfreeze"]
    exclude = ["last_hash"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(kind=Account.Kind.WALLET)

    # Actions need the change permission in Django; these go through the service instead of a form.
    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and request.user.has_perm("dcep.change_wallet")

    @admin.action(description="Freeze the selected wallets", permissions=["change"])
    def freeze(self, request, queryset):
        _set_status(self, request, queryset, Account.Status.FROZEN)

    @admin.action(description="Unfreeze the selected wallets", permissions=["change"])
    def unfreeze(self, request, queryset):
        _set_status(self, request, queryset, Account.Status.ACTIVE)


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "amount", "from_account", "to_account", "obligation", "settlement", "created_at"]
    list_filter = ["kind", "from_operator", "to_operator"]
    search_fields = ["id", "from_account__number", "to_account__number", "tier1_tx_id"]
    list_select_related = ["from_account", "to_account", "settlement"]
    date_hierarchy = "created_at"


@admin.register(Settlement)
class SettlementAdmin(ReadOnlyAdmin):
    """Settlement batches, read-only, under the supply and the journal's invariants
    (``supply_report``); "deep check" runs ``deep_checks`` (every balance, leg sum, entry
    hash chain and batch root) as ``dcep_audit`` does, without reading the chain."""

    list_display = ["id", "status", "transfer_count", "merkle_root", "anchor_height", "created_at", "anchored_at"]
    list_filter = ["status"]
    exclude = ["leaf_hashes"]
    change_list_template = "console/settlement_change_list.html"

    def get_urls(self):
        deep = self.admin_site.admin_view(self.deep_check_view)
        return [path("invariants/", deep, name="dcep_settlement_invariants"), *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        from apps.console.selectors import dcep_check

        return super().changelist_view(request, extra_context={"dcep": dcep_check(), **(extra_context or {})})

    def deep_check_view(self, request):
        from apps.console.selectors import dcep_check
        from apps.dcep.selectors import deep_checks

        report = dcep_check()
        checks = list(report.get("checks", [])) + (deep_checks() if report["set_up"] else [])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "DCEP invariants (journal, deep)",
            "dcep": report,
            "checks": checks,
            "ok": all(c["ok"] for c in checks),
        }
        return TemplateResponse(request, "console/dcep_invariants.html", context)


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ["id", "status", "amount", "captured", "from_account", "to_account", "expires_at", "release_app"]
    list_filter = ["status"]
    search_fields = ["id", "from_account__number", "to_account__number"]
    list_select_related = ["from_account", "to_account", "release_app"]


@admin.register(HoldRelease)
class HoldReleaseAdmin(ReadOnlyAdmin):
    """What each chain event did to each event-bound hold (programmable payments)."""

    list_display = ["created_at", "hold", "event_name", "outcome", "height", "event_key", "detail"]
    list_filter = ["outcome", "event_name"]
    search_fields = ["hold__id", "event_key", "tx_id"]

"""The operator's view of DCEP: institutions, wallets (freeze / unfreeze), and the journal read-only.

Money never moves here: transfers, holds and settlements are read-only (the journal is
written only by the services, and on PostgreSQL the database refuses edits anyway), and
a wallet's status changes through ``services.wallet_update`` like the API's PATCH, so the
audit trail and the rules are the same.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet

from apps.common.admin import ReadOnlyAdmin
from apps.common.errors import DomainError
from apps.dcep import services
from apps.dcep.models import Account, Hold, HoldRelease, Institution, Settlement, Transfer, Wallet


@admin.register(Institution)
class InstitutionAdmin(admin.ModelAdmin):
    list_display = ["slug", "kind", "tenant", "home_region", "created_at"]
    list_filter = ["kind", "home_region"]
    search_fields = ["tenant__slug", "tenant__name"]
    list_select_related = ["tenant", "home_region"]
    # Institutions are made by dcep_setup / institution_ensure (they come with accounts and keys).
    readonly_fields = ["tenant", "kind", "signing_public_key", "created_at", "updated_at"]
    exclude = ["signing_private_key_encrypted"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


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
    list_display = ["id", "status", "transfer_count", "merkle_root", "anchor_height", "created_at", "anchored_at"]
    list_filter = ["status"]
    exclude = ["leaf_hashes"]


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

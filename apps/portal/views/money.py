"""Digital currency (``/portal/dcep/``) and billing (``/portal/billing/``).

DCEP pages read through ``apps.dcep.selectors`` (the one place for DCEP visibility, as the
API's viewsets): holders and operator banks see their wallets, transfers and holds; the
central bank sees the supply with every invariant (``supply_report``; the expensive
``deep_checks`` when asked) and the settlement batches with their anchors on the tier-1
chain. They are read-only: money moves through the API, whose writes need an
Idempotency-Key a form cannot give honestly.

Billing is for admins and owners (as ``InvoiceViewSet``/``BillingView``); the owner chooses
the paying corporate wallet (``billing_account_set``, the API's PUT). Invoices are paid by
the platform from that wallet (the API offers no "pay now" to tenants), so there is no pay
button here.
"""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Sum
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from rest_framework.exceptions import APIException

from apps.billing import selectors as billing
from apps.billing import services as billing_services
from apps.billing.api.serializers import BillingWalletInput
from apps.billing.presentation import invoice_context
from apps.common.errors import DomainError
from apps.dcep import selectors, settlement, tier1
from apps.dcep.api.base import DcepCaller
from apps.dcep.api.serializers import transfer_from_row
from apps.dcep.errors import Tier1Unavailable
from apps.dcep.models import Account, Institution
from apps.portal.views.forms import ServicePage, page_of, parse_uuid, posted, validated
from apps.tenants.models import Role


class DcepPage(DcepCaller, ServicePage):
    """DCEP pages; ``require`` (the API's ``DcepCaller``) checks the kind of institution."""

    section = "dcep"

    def institution(self) -> Institution | None:
        return selectors.institution_of(self.tenant)

    def kind(self) -> str:
        """``central_bank``, ``operator_bank`` or ``holder`` (a tenant holding wallets, or none yet)."""
        inst = self.institution()
        return inst.kind if inst is not None else "holder"

    def render(self, template: str, context: dict | None = None, status: int = 200):
        return super().render(template, {"kind": self.kind(), **(context or {})}, status=status)


def transfer_rows(transfers) -> list[dict]:
    """Transfers as the API shows them (``transfer_from_row``), for a table."""
    return [transfer_from_row(t) for t in transfers]


class DcepView(DcepPage):
    """The overview: wallets and recent transfers, or the supply and its invariants."""

    def get(self, request):
        kind = self.kind()
        context: dict = {"kind": kind}
        if kind == Institution.Kind.CENTRAL_BANK:
            context.update(self.supply(deep=request.GET.get("deep") == "1"))
            context["settlements"] = selectors.settlements_visible_to(self.tenant).order_by("-created_at")[:5]
        else:
            wallets = selectors.wallets_visible_to(self.tenant).order_by("number")
            totals = wallets.aggregate(available=Sum("balance"), held=Sum("held"))
            context.update(
                wallets=page_of(request, wallets),
                available=totals["available"] or 0,
                held=totals["held"] or 0,
                transfers=transfer_rows(selectors.transfers_visible_to(self.tenant).order_by("-created_at")[:10]),
                pending_holds=selectors.holds_visible_to(self.tenant).filter(status="pending").count(),
            )
            if kind == Institution.Kind.OPERATOR_BANK:
                vault = Account.objects.filter(kind=Account.Kind.VAULT, operator=self.institution()).first()
                context["vault"] = vault.balance if vault is not None else 0
        return self.render("portal/money/dcep.html", context)

    def supply(self, *, deep: bool) -> dict:
        """``supply_report`` as ``GET /dcep/supply`` gives it; the journal's half alone when the
        tier-1 chain cannot be read right now (said on the page)."""
        unavailable = ""
        try:
            chain = tier1.tier1_chain(ready=False)
            report = selectors.supply_report(
                tier1.chain_supply(chain), anchored_on_chain=settlement.anchored_on_chain(chain)
            )
        except Tier1Unavailable as exc:
            unavailable = exc.detail
            report = selectors.supply_report(None)
        return {
            "supply": report,
            "chain_unavailable": unavailable,
            "deep": deep,
            "deep_checks": selectors.deep_checks() if deep else None,
        }


class WalletView(DcepPage):
    """One wallet the tenant holds or operates: its balance, caps, transfers and holds."""

    def get(self, request, number):
        wallet = get_object_or_404(selectors.wallets_visible_to(self.tenant), number=number)
        transfers = selectors.transfers_of_wallet(
            selectors.transfers_visible_to(self.tenant), self.tenant, wallet.number
        ).order_by("-created_at", "-id")
        page = page_of(request, transfers)
        holds = selectors.holds_visible_to(self.tenant).filter(from_account=wallet).order_by("-created_at")[:20]
        return self.render(
            "portal/money/wallet.html",
            {"wallet": wallet, "transfers": page, "rows": transfer_rows(page), "holds": holds},
        )


class TransfersView(DcepPage):
    def get(self, request):
        transfers = selectors.transfers_visible_to(self.tenant).order_by("-created_at", "-id")
        page = page_of(request, transfers)
        return self.render("portal/money/transfers.html", {"transfers": page, "rows": transfer_rows(page)})


class HoldsView(DcepPage):
    def get(self, request):
        holds = selectors.holds_visible_to(self.tenant).order_by("-created_at")
        return self.render("portal/money/holds.html", {"holds": page_of(request, holds)})


class SettlementsView(DcepPage):
    """Interbank settlement batches: net positions, Merkle root, and the anchor on tier 1.
    The central bank can start one now (``settlement_start``, as ``POST /dcep/settlements``;
    a worker nets and anchors it)."""

    def back_url(self) -> str:
        return reverse("portal:dcep-settlements")

    def get(self, request):
        batches = selectors.settlements_visible_to(self.tenant).order_by("-created_at")
        return self.render("portal/money/settlements.html", {"settlements": page_of(request, batches, per_page=20)})

    def post(self, request):
        self.require(Institution.Kind.CENTRAL_BANK)
        batch, created = settlement.settlement_start(started_by=self.tenant, actor=request.user, request=request)
        if created:
            messages.success(request, "A settlement batch is started: it is netted and anchored on tier 1 shortly.")
        else:
            messages.info(request, f"A batch is already open ({batch.status}); it is anchored first.")
        return HttpResponseRedirect(reverse("portal:dcep-settlements"))


# --------------------------------------------------------------------------- billing


class BillingPage(ServicePage):
    section = "billing"
    read_role = Role.ADMIN  # as InvoiceViewSet and BillingView
    write_role = Role.OWNER  # choosing the paying wallet, as BillingView.put

    def back_url(self) -> str:
        return reverse("portal:billing")


class BillingView(BillingPage):
    def context(self) -> dict:
        corporate = (
            Account.objects.filter(
                kind=Account.Kind.WALLET, wallet_kind=Account.WalletKind.CORPORATE, holder_tenant=self.tenant
            )
            .exclude(status=Account.Status.CLOSED)
            .order_by("number")
        )
        return {
            "status": billing.billing_status(self.tenant),
            "invoices": page_of(self.request, self.scope(billing.invoices_of(self.tenant)).order_by("-month")),
            "corporate_wallets": corporate,
            "can_own": self.can(Role.OWNER),
        }

    def get(self, request):
        return self.render("portal/money/billing.html", self.context())

    def post(self, request):
        data = posted(request, ("wallet",))
        try:
            values = validated(BillingWalletInput, data)
            billing_services.billing_account_set(
                tenant=self.tenant, wallet_number=values["wallet"], actor=request.user, request=request
            )
        except (APIException, DomainError) as exc:
            return self.form_error("portal/money/billing.html", {**self.context(), "form": data}, exc)
        messages.success(request, f"Invoices are paid from wallet {values['wallet']} from now on.")
        return HttpResponseRedirect(reverse("portal:billing"))


class InvoiceView(BillingPage):
    def get(self, request, pk):
        invoices = self.scope(billing.invoices_of(self.tenant, with_lines=True))
        invoice = get_object_or_404(invoices, pk=parse_uuid(pk))
        return self.render("portal/money/invoice.html", invoice_context(invoice))

"""Money movement: issuances and withdrawals (tier 1), exchanges, redemptions, payments, holds.

Every POST takes an ``Idempotency-Key`` (apps.dcep.idempotency). Views parse, authorize,
call a service inside the idempotent runner and serialize the outcome.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from apps.chainapps.models import ChainApp
from apps.dcep import selectors, services, tier1
from apps.dcep.api import serializers as s
from apps.dcep.api.base import IDEMPOTENCY_KEY, DcepViewSet
from apps.dcep.errors import DcepError, NotFound
from apps.dcep.models import Institution, Transfer
from apps.dcep.programmable import EventRule, ReleaseRule
from apps.dcep.selectors import institution_slugs


def _transfer_body(journal_dict: dict) -> dict:
    """A TransferSerializer body, built by hand like a batch's items: the same JSON byte for byte.

    The operators' slugs come with the locked accounts; an account made in the same
    transaction (a hold's) has none, and then they are read."""
    accounts = (journal_dict["from"], journal_dict["to"])
    slugs = {a.operator_id: a.operator_slug for a in accounts if a.operator_id is not None}
    if None in slugs.values():
        slugs = institution_slugs()
    return s.transfer_from_journal(journal_dict, slugs)


def _tier1_body(op) -> dict:
    transfer = Transfer.objects.select_related(
        "from_account", "to_account", "from_operator__tenant", "to_operator__tenant", "tier1_op"
    ).get(pk=op.transfer_id)
    body = {
        "operator": op.operator.slug,
        "amount": op.amount,
        "transfer": s.transfer_from_row(transfer),
        "receipt": {"tx_id": op.tx_id, "height": (op.receipt or {}).get("height")},
    }
    return s.Tier1ResultSerializer(body).data


class IssuanceViewSet(DcepViewSet):
    """Central bank → operator (tier 1)."""

    visible = staticmethod(selectors.transfers_visible_to)
    service = staticmethod(tier1.issuance_create)

    @extend_schema(
        request=s.OperatorAmountInput, responses={201: s.Tier1ResultSerializer}, parameters=[IDEMPOTENCY_KEY]
    )
    def create(self, request):
        actor = self.require(Institution.Kind.CENTRAL_BANK)
        data = s.OperatorAmountInput(data=request.data)
        data.is_valid(raise_exception=True)
        key = f"{self.tenant.pk}:{request.META.get('HTTP_IDEMPOTENCY_KEY', '')}"

        def work():
            op = type(self).service(
                operator_slug=data.validated_data["operator"], amount=data.validated_data["amount"],
                request_key=key, actor=actor.user,
            )  # fmt: skip
            return 201, _tier1_body(op), {}

        return self.idempotent_remote(work)


class WithdrawalViewSet(IssuanceViewSet):
    """Operator → central bank (tier 1), refused beyond what the operator holds unallocated."""

    service = staticmethod(tier1.withdrawal_create)


class ExchangeViewSet(DcepViewSet):
    """The operator's vault → a wallet it operates."""

    visible = staticmethod(selectors.transfers_visible_to)
    service = staticmethod(services.exchange_create)

    @extend_schema(request=s.WalletAmountInput, responses={201: s.TransferSerializer}, parameters=[IDEMPOTENCY_KEY])
    def create(self, request):
        actor = self.require(Institution.Kind.OPERATOR_BANK)
        data = s.WalletAmountInput(data=request.data)
        data.is_valid(raise_exception=True)

        def work():
            return 201, _transfer_body(type(self).service(actor=actor, **data.validated_data)), {}

        return self.idempotent_local(work)


class RedemptionViewSet(ExchangeViewSet):
    """A wallet → its operator's vault."""

    service = staticmethod(services.redemption_create)


class PaymentViewSet(DcepViewSet):
    visible = staticmethod(selectors.transfers_visible_to)

    @extend_schema(request=s.PaymentInput, responses={201: s.TransferSerializer}, parameters=[IDEMPOTENCY_KEY])
    def create(self, request):
        payment = s.payment_input(request.data)
        actor = self.actor

        def work():
            return 201, _transfer_body(services.payment_create(actor=actor, **payment)), {}

        return self.idempotent_local(work)

    @extend_schema(request=s.PaymentBatchInput, responses={201: s.BatchResultSerializer}, parameters=[IDEMPOTENCY_KEY])
    @action(detail=False, methods=["post"])
    def batch(self, request):
        data = s.PaymentBatchInput(data=request.data)
        data.is_valid(raise_exception=True)
        actor = self.actor
        linked = data.validated_data["linked"]

        def work():
            outcome = services.payment_batch(actor=actor, payments=data.validated_data["payments"], linked=linked)
            slugs = institution_slugs()
            stamp = None  # every transfer of a batch has the same time: encoded once
            results = []
            for index, result in enumerate(outcome.results):
                if "error" in result:
                    error = result["error"]
                    results.append(
                        {"index": index, "status": error.status_code, "code": error.code, "detail": error.detail}
                    )
                elif outcome.applied:
                    stamp = stamp or JSONEncoder().default(result["transfer"]["created_at"])
                    transfer = s.transfer_from_journal(result["transfer"], slugs, created_at=stamp)
                    results.append({"index": index, "status": 201, "transfer": transfer})
                else:
                    results.append(_not_applied(index))
            # A linked batch stops at its first refusal: the rest were not tried.
            results += [_not_applied(i) for i in range(len(results), len(data.validated_data["payments"]))]
            succeeded = sum(1 for r in results if r["status"] == 201)
            body = {
                "applied": outcome.applied,
                "linked": linked,
                "count": len(data.validated_data["payments"]),
                "succeeded": succeeded,
                "results": results,
            }
            if not outcome.applied:
                refused = next(r for r in results if r["status"] not in (201, 424))
                raise DcepError(
                    f"The linked batch was not applied: payment {refused['index']} was refused ({refused['code']}).",
                    code="linked-batch-failed",
                    status=409,
                    extra=body,
                )
            # Built by hand (8,190 items through a serializer would cost more than the payments).
            return 201, body, {}

        return self.idempotent_local(work, look_first=True)


def _not_applied(index: int) -> dict:
    detail = "not applied: another payment of this linked batch was refused"
    return {"index": index, "status": 424, "code": "linked-batch-failed", "detail": detail}


class HoldViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, DcepViewSet):
    visible = staticmethod(selectors.holds_visible_to)
    serializer_class = s.HoldSerializer
    filterset_fields = ["status"]
    ordering_fields = ["created_at", "expires_at", "amount"]

    @extend_schema(request=s.HoldInput, responses={201: s.HoldSerializer}, parameters=[IDEMPOTENCY_KEY])
    def create(self, request):
        data = s.HoldInput(data=request.data)
        data.is_valid(raise_exception=True)
        actor = self.actor

        def work():
            fields = dict(data.validated_data)
            if "release_on" in fields:  # inside: a 404 for the app is kept under the key like any refusal
                fields["release_on"] = self.release_rule(fields["release_on"])
            hold = services.hold_create(actor=actor, **fields)
            return 201, s.HoldSerializer(self.visible(self.tenant).get(pk=hold.pk)).data, {}

        return self.idempotent_local(work)

    def release_rule(self, release_on: dict) -> ReleaseRule:
        """The app through the same tenancy scope as ``GET /apps/{id}``: one the caller's tenant
        reads, not deleted; another tenant's app is a 404 like one that does not exist."""
        apps = self.scope(ChainApp.objects.filter(deleted_at__isnull=True), "tenant")
        app = apps.filter(pk=release_on["app"]).first()
        if app is None:
            raise NotFound(f"release_on.app {release_on['app']} does not exist.")
        rules = {
            k: EventRule(v["event"], v["match"], v.get("signer", ""))
            for k, v in release_on.items()
            if k in ("capture", "void")
        }
        return ReleaseRule(app=app, contract=release_on.get("contract", ""), **rules)

    @extend_schema(request=s.CaptureInput, responses=s.HoldSerializer, parameters=[IDEMPOTENCY_KEY])
    @action(detail=True, methods=["post"])
    def capture(self, request, pk=None):
        hold = self.get_object()
        data = s.CaptureInput(data=request.data)
        data.is_valid(raise_exception=True)
        actor = self.actor

        def work():
            services.hold_capture(actor=actor, hold_id=hold.pk, amount=data.validated_data.get("amount"))
            return 200, s.HoldSerializer(self.visible(self.tenant).get(pk=hold.pk)).data, {}

        return self.idempotent_local(work)

    @extend_schema(request=None, responses=s.HoldSerializer, parameters=[IDEMPOTENCY_KEY])
    @action(detail=True, methods=["post"])
    def void(self, request, pk=None):
        hold = self.get_object()
        actor = self.actor

        def work():
            services.hold_void(actor=actor, hold_id=hold.pk)
            return 200, s.HoldSerializer(self.visible(self.tenant).get(pk=hold.pk)).data, {}

        return self.idempotent_local(work)

    def retrieve(self, request, pk=None):
        return Response(self.get_serializer(self.get_object()).data)

"""Reads of the money: institutions, the tier-1 chain, transfers and their proofs, settlements, supply."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.chainapps.models import LedgerNode
from apps.dcep import selectors, settlement, tier1
from apps.dcep.api import serializers as s
from apps.dcep.api.base import DcepCaller, DcepViewSet
from apps.dcep.errors import Tier1Unavailable
from apps.dcep.models import Institution, Transfer


class InstitutionViewSet(mixins.ListModelMixin, DcepViewSet):
    """The central bank and the operator banks: public to every tenant (a catalogue)."""

    visible = staticmethod(lambda tenant: Institution.objects.select_related("tenant", "home_region"))
    serializer_class = s.InstitutionSerializer
    filterset_fields = ["kind"]
    ordering_fields = ["tenant__slug", "created_at"]


class ChainView(DcepCaller, APIView):
    """The tier-1 app: what a verifier needs (its nodes' keys, the central bank's key, the head)."""

    @extend_schema(responses=s.Tier1ChainSerializer)
    def get(self, request):
        chain = tier1.tier1_chain(ready=False)
        try:
            info = tier1.chain_info(chain)
        except Tier1Unavailable:
            info = {}
        keys = dict(LedgerNode.objects.filter(app=chain.app).exclude(public_key="").values_list("pk", "public_key"))
        body = {
            "app": str(chain.app_id),
            "status": chain.app.status,
            "height": info.get("height"),
            "head_hash": info.get("head_hash"),
            "signer": chain.signer,
            "signer_public_key": tier1.central_bank().signing_public_key,
            "node_keys": {str(k): v for k, v in keys.items()},
        }
        return Response(s.Tier1ChainSerializer(body).data)


class TransferFilter(django_filters.FilterSet):
    wallet = django_filters.CharFilter(method="filter_wallet", label="a wallet number (either side)")
    kind = django_filters.ChoiceFilter(choices=Transfer.Kind.choices)
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Transfer
        fields = ["wallet", "kind", "since", "until"]

    def filter_wallet(self, queryset, name, value):
        from apps.tenants.context import request_membership

        membership = request_membership(self.request) if self.request is not None else None
        return selectors.transfers_of_wallet(queryset, membership.tenant if membership else None, value)


class TransferViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, DcepViewSet):
    visible = staticmethod(selectors.transfers_visible_to)
    serializer_class = s.TransferSerializer
    filterset_class = TransferFilter
    ordering_fields = ["created_at", "amount"]
    ordering = ["-created_at", "-id"]
    action_problem_codes = {"proof": ("409",)}  # not-settled, not-anchored

    def get_serializer(self, *args, **kwargs):
        if args:
            rows = args[0]
            args = ([s.transfer_from_row(t) for t in rows] if kwargs.get("many") else s.transfer_from_row(rows),)
        return super().get_serializer(*args, **kwargs)

    @extend_schema(responses=s.ProofSerializer)
    @action(detail=True, methods=["get"], filterset_class=None)
    def proof(self, request, pk=None):
        return Response(s.ProofSerializer(settlement.transfer_proof(self.get_object())).data)


class SettlementViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, DcepViewSet):
    visible = staticmethod(selectors.settlements_visible_to)
    serializer_class = s.SettlementSerializer
    filterset_fields = ["status"]
    ordering_fields = ["created_at"]

    @extend_schema(request=None, responses={202: s.SettlementSerializer})
    def create(self, request):
        self.require(Institution.Kind.CENTRAL_BANK)
        batch, _ = settlement.settlement_start(started_by=self.tenant, actor=request.user, request=request)
        body = s.SettlementSerializer(batch).data
        url = request.build_absolute_uri(f"/api/v1/dcep/settlements/{batch.pk}")
        return Response({**body, "url": url}, status=202, headers={"Location": url})


class SupplyView(DcepCaller, APIView):
    """The whole supply and every invariant: central bank and platform staff only."""

    @extend_schema(responses=s.SupplySerializer)
    def get(self, request):
        self.require(Institution.Kind.CENTRAL_BANK, "platform")
        chain = tier1.tier1_chain(ready=False)
        supply = tier1.chain_supply(chain)
        anchored = settlement.anchored_on_chain(chain)
        return Response(s.SupplySerializer(selectors.supply_report(supply, anchored_on_chain=anchored)).data)

"""Wallets: operators open, re-tier, freeze and close them; holders read them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.response import Response

from apps.dcep import selectors, services
from apps.dcep.api import serializers as s
from apps.dcep.api.base import IDEMPOTENCY_KEY, DcepViewSet
from apps.dcep.models import Institution


class WalletViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, DcepViewSet):
    visible = staticmethod(selectors.wallets_visible_to)
    serializer_class = s.WalletSerializer
    lookup_field = "number"
    lookup_url_kwarg = "id"
    lookup_value_regex = "[0-9]{1,16}"
    filterset_fields = ["status", "tier", "wallet_kind"]
    ordering_fields = ["created_at", "balance"]

    @extend_schema(request=s.WalletOpenInput, responses={201: s.WalletSerializer}, parameters=[IDEMPOTENCY_KEY])
    def create(self, request):
        actor = self.require(Institution.Kind.OPERATOR_BANK)
        data = s.WalletOpenInput(data=request.data)
        data.is_valid(raise_exception=True)

        def work():
            wallet = services.wallet_open(actor=actor, **data.validated_data)
            return 201, s.WalletSerializer(self.visible(self.tenant).get(pk=wallet.pk)).data, {}

        return self.idempotent_local(work)

    @extend_schema(request=s.WalletUpdateInput, responses=s.WalletSerializer, parameters=[IDEMPOTENCY_KEY])
    def partial_update(self, request, id=None):
        wallet = self.get_object()
        actor = self.require(Institution.Kind.OPERATOR_BANK)
        data = s.WalletUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)

        def work():
            updated = services.wallet_update(actor=actor, number=wallet.number, **data.validated_data)
            return 200, s.WalletSerializer(self.visible(self.tenant).get(pk=updated.pk)).data, {}

        return self.idempotent_local(work)

    def retrieve(self, request, id=None):
        return Response(self.get_serializer(self.get_object()).data)

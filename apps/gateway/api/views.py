"""The gateway routes under /api/v1/apps/{id}/: app users, transactions, blocks, state, chain.

Tenant scoping is the usual one (TenantScopedViewSet): another tenant's app is a 404
before any node is contacted. Reads need viewer, writes developer.
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.chainapps.api.viewsets import AppChildViewSet
from apps.chainapps.models import ChainApp
from apps.common.viewsets import TenantScopedViewSet
from apps.custody import services as custody
from apps.gateway import services
from apps.gateway.api import serializers as s
from apps.gateway.models import AppUser
from apps.metering.api.mixins import GatewayMeteringMixin, content_length
from apps.runtime.nodeapi import RawJSON
from apps.tenants.models import Role

GATEWAY_PROBLEMS = ("502", "503", "504")
APP_ID = OpenApiParameter("app_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="the chain app's id")


@extend_schema(parameters=[APP_ID])
class AppUserViewSet(GatewayMeteringMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, AppChildViewSet):
    """An app's users: registering or revoking one is a ledger transaction. Custody-mode
    users also sign through the platform (developer) and export their key once (admin)."""

    metered_actions = frozenset({"transactions"})  # signing for a custody user: the tenant's traffic

    queryset = AppUser.objects.select_related("created_by", "app__tenant")
    serializer_class = s.AppUserSerializer
    filterset_fields = ["status", "name", "mode"]
    ordering_fields = ["created_at", "name"]
    problem_codes = ("503",)
    action_roles = {"export": Role.ADMIN}
    action_problem_codes = {"transactions": ("429", "502", "504")}

    @extend_schema(
        request=s.AppUserCreateInputSerializer,
        responses={201: s.AppUserSerializer},
        description=(
            "Registers the user on the app's ledger (a `_config` `user.add` transaction signed with the app's "
            "admin key) and answers once a node confirmed it. 503 when it could not be confirmed: the user is "
            "then kept as `pending`, and sending the same request again finishes it. `mode: custody` "
            "(`{name, mode}`, no `public_key`): the platform generates the key pair and keeps the private key "
            "encrypted (docs/custody.md)."
        ),
    )
    def create(self, request, *args, **kwargs):
        app = self.get_app()
        data = s.AppUserCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if values["mode"] == AppUser.Mode.CUSTODY:
            user = custody.custody_user_create(app=app, actor=request.user, name=values["name"], request=request)
        else:
            user = services.appuser_create(
                app=app, actor=request.user, name=values["name"], public_key=values["public_key"], request=request
            )
        body = self.get_serializer(user).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})

    @extend_schema(
        request=None,
        responses={200: s.AppUserSerializer},
        description=(
            "Revokes the user on the app's ledger (`_config` `user.revoke`); nodes refuse its transactions from "
            "the block that commits it. Answers once confirmed; 503 keeps the user `revoking` until the same "
            "request is sent again. Revoking a revoked user answers 200."
        ),
    )
    def destroy(self, request, *args, **kwargs):
        user = services.appuser_revoke(user=self.get_object(), actor=request.user, request=request)
        return Response(self.get_serializer(user).data)

    @extend_schema(
        request=s.CustodySignInputSerializer,
        responses={200: s.ReceiptSerializer},
        description=(
            "Custody users only: the platform builds the transaction `{contract, function, args}` as the client "
            "would, signs it with the user's custodied key, records the signature in the audit log "
            "(`custody.sign`, with the tx id) and submits it like `POST /apps/{id}/transactions`: the receipt, "
            "with the same codes (400 with the node's reason, 429 `tps-quota-exceeded`, 503, 504). 409 "
            "`user-not-in-custody` for an upload-mode user, `user-not-active` for a pending or revoked one."
        ),
    )
    @action(detail=True, methods=["post"], url_path="transactions")
    def transactions(self, request, app_id=None, pk=None):
        user = self.get_object()
        data = s.CustodySignInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        receipt = custody.custody_submit(user=user, actor=request.user, request=request, **data.validated_data)
        return Response(receipt)

    @extend_schema(
        request=None,
        responses={200: s.CustodyExportSerializer},
        description=(
            "Custody users only, tenant admins only: answers the private key once (`private_key`: base64 of the "
            "32-byte Ed25519 seed; `private_key_pem`: PKCS#8) and marks the user exported (audited). A second "
            "export is 409 `key-already-exported`; a revoked user's key is destroyed (409 `key-destroyed`)."
        ),
    )
    @action(detail=True, methods=["post"], url_path="export")
    def export(self, request, app_id=None, pk=None):
        exported = custody.custody_export(user=self.get_object(), actor=request.user, request=request)
        return Response(s.CustodyExportSerializer(exported).data, headers={"Cache-Control": "no-store"})


def _answer(result):
    """A read's answer; one the node sent too deeply nested to parse goes out as it came."""
    if isinstance(result, RawJSON):
        return HttpResponse(bytes(result), content_type="application/json")
    return Response(result)


class AppLedgerViewSet(GatewayMeteringMixin, TenantScopedViewSet):
    """Signed transactions to, and reads from, a healthy node of the app.

    Metered (``GatewayMeteringMixin``): what reached a node is counted for the app and
    that node's region.
    """

    queryset = ChainApp.objects.select_related("tenant")
    filter_backends: list = []
    pagination_class = None
    problem_codes = GATEWAY_PROBLEMS

    @extend_schema(
        request=s.SubmitSerializer,
        responses={200: s.SubmitResultSerializer},
        description=(
            "Submit one signed envelope `{tx, sig}` (answer: its receipt) or a batch `{txs: [...]}` (answer: "
            "`{receipts: [...]}` in order). Answers once the block is committed. A refused transaction is a "
            "400 whose `code` is the node's reason (`bad_signature`, `replayed_nonce`, `unknown_signer`, …). "
            "`tx.app` must be this app's id. 503/504 are safe to retry with the same envelope. Every "
            "transaction counts against the app's `tps_quota` and the tenant's `max_tps` (token buckets "
            "shared by all web processes): over either, 429 `tps-quota-exceeded` with `Retry-After`, "
            "`limit_tps` and `scope`. Before that, the app's storage (`storage_mb`, from its nodes' last "
            "reading): 403 `storage-quota-exceeded`; and the tenant's daily data volume (`max_daily_volume_mb`, "
            "request bytes per UTC day): 429 `daily-volume-exceeded` with `Retry-After` until midnight UTC."
        ),
    )
    @action(detail=True, methods=["post"], url_path="transactions")
    def transactions(self, request, pk=None):
        app = self.get_object()
        data = request.data
        nbytes = content_length(request)
        if isinstance(data, dict) and "txs" in data and "tx" not in data:
            return Response(services.gateway_submit_batch(app=app, envelopes=data["txs"], metered=True, nbytes=nbytes))
        return Response(services.gateway_submit(app=app, envelope=data, metered=True, nbytes=nbytes))

    @extend_schema(responses={200: s.TxLookupSerializer})
    @action(detail=True, methods=["get"], url_path=r"transactions/(?P<tx_id>[0-9a-fA-F]{64})")
    def transaction(self, request, pk=None, tx_id=None):
        return _answer(services.gateway_tx(app=self.get_object(), tx_id=tx_id))

    @extend_schema(
        parameters=[OpenApiParameter("height", OpenApiTypes.INT, OpenApiParameter.PATH)],
        responses={200: s.BlockSerializer},
    )
    @action(detail=True, methods=["get"], url_path=r"blocks/(?P<height>[0-9]{1,19})")
    def block(self, request, pk=None, height=None):
        return _answer(services.gateway_block(app=self.get_object(), height=int(height)))

    @extend_schema(
        operation_id="apps_state_contract_retrieve",
        responses={200: s.StateSerializer},
        description="The current value of `key` in `contract` (404 if it has none).",
    )
    @action(detail=True, methods=["get"], url_path=r"state/(?P<contract>[A-Za-z0-9_]{1,64})/(?P<key>[^/]+)")
    def contract_state(self, request, pk=None, contract=None, key=None):
        return _answer(services.gateway_state(app=self.get_object(), contract=contract, key=key))

    @extend_schema(
        operation_id="apps_state_key_retrieve",
        responses={200: s.StateSerializer},
        description="The current value of `key` in the app's own contract (its `contract_template`).",
    )
    @action(detail=True, methods=["get"], url_path=r"state/(?P<key>[^/]+)")
    def state(self, request, pk=None, key=None):
        app = self.get_object()
        return _answer(services.gateway_state(app=app, contract=app.contract_template, key=key))

    @extend_schema(responses={200: s.ChainSerializer}, description="Chain summary from one healthy node.")
    @action(detail=True, methods=["get"], url_path="chain")
    def chain(self, request, pk=None):
        return Response(services.gateway_chain(app=self.get_object()))

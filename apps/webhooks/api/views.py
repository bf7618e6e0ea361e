"""/api/v1/apps/{app_id}/webhooks and their delivery log.

Scoped like every tenant resource (TenantScopedViewSet): another tenant's app, webhook or
delivery is a 404 indistinguishable from a random id. Reads need viewer, writes developer.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from apps.chainapps.api.viewsets import AppChildViewSet, parse_uuid
from apps.common.viewsets import TenantScopedViewSet
from apps.webhooks import services
from apps.webhooks.api import serializers as s
from apps.webhooks.models import Webhook, WebhookDelivery

APP_ID = OpenApiParameter("app_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="the chain app's id")
WEBHOOK_ID = OpenApiParameter("webhook_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="the webhook's id")


@extend_schema(parameters=[APP_ID])
class WebhookViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, AppChildViewSet):
    """An app's webhooks: its contract events POSTed, signed, to the tenant's endpoint (docs/webhooks.md)."""

    queryset = Webhook.objects.select_related("created_by", "app__tenant")
    serializer_class = s.WebhookSerializer
    filterset_fields = ["active"]
    ordering_fields = ["created_at"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @extend_schema(
        request=s.WebhookCreateInputSerializer,
        responses={201: s.WebhookCreatedSerializer},
        description=(
            "Registers a webhook. The answer carries `secret` this once (generated when not given): deliveries "
            'are signed `BSN-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. '
            "Events of blocks committed from now on are delivered, in chain order, at least once. A URL naming "
            "a private, loopback, link-local, multicast or reserved address is 400 `address-not-allowed`."
        ),
    )
    def create(self, request, *args, **kwargs):
        app = self.get_app()
        data = s.WebhookCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        webhook, secret = services.webhook_create(app=app, actor=request.user, request=request, **data.validated_data)
        webhook.secret = secret
        body = s.WebhookCreatedSerializer(webhook, context=self.get_serializer_context()).data
        location = f"/api/v1/apps/{app.pk}/webhooks/{webhook.pk}"
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})

    @extend_schema(
        request=s.WebhookUpdateInputSerializer,
        responses={200: s.WebhookSerializer},
        description=(
            "Change `url`, `events` or `active`. While inactive, nothing is sent and new events are not queued."
        ),
    )
    def partial_update(self, request, *args, **kwargs):
        webhook = self.get_object()
        data = s.WebhookUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        webhook = services.webhook_update(
            webhook=webhook, actor=request.user, changes=dict(data.validated_data), request=request
        )
        return Response(self.get_serializer(webhook).data)

    @extend_schema(responses={204: None}, description="Removes the webhook and its delivery log.")
    def destroy(self, request, *args, **kwargs):
        services.webhook_delete(webhook=self.get_object(), actor=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(parameters=[APP_ID, WEBHOOK_ID])
class DeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """A webhook's delivery log, newest event first: status, response code, latency, attempts, next attempt."""

    queryset = WebhookDelivery.objects.all()
    serializer_class = s.DeliverySerializer
    tenant_field = "webhook__app__tenant"
    filterset_fields = ["status"]
    ordering_fields = ["created_at", "height"]
    ordering = ["-height", "-tx_index", "-seq"]

    def get_webhook(self) -> Webhook:
        webhook = (
            self.scope(Webhook.objects.select_related("app__tenant"), "app__tenant")
            .filter(pk=parse_uuid(self.kwargs.get("webhook_id")), app_id=parse_uuid(self.kwargs.get("app_id")))
            .first()
        )
        if webhook is None:
            raise NotFound()
        return webhook

    def get_queryset(self):
        queryset = super().get_queryset()
        if getattr(self, "swagger_fake_view", False):
            return queryset
        return queryset.filter(webhook=self.get_webhook()).order_by(*self.ordering)

    @extend_schema(
        request=None,
        responses={200: s.DeliverySerializer},
        description=(
            "Send a finished (succeeded or failed) delivery again, with a fresh 24 h retry window; it goes "
            "before the webhook's other pending deliveries. 409 `delivery-pending` while it is still pending."
        ),
    )
    @action(detail=True, methods=["post"], url_path="redeliver")
    def redeliver(self, request, *args, **kwargs):
        delivery = services.delivery_redeliver(delivery=self.get_object(), actor=request.user, request=request)
        return Response(self.get_serializer(delivery).data)

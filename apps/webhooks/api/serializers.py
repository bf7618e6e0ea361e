"""Webhooks and their delivery log: inputs (strict) and outputs."""

from __future__ import annotations

import re

from rest_framework import serializers

from apps.common.serializers import StrictInputSerializer
from apps.webhooks.models import Webhook, WebhookDelivery

EVENT_NAME_RE = re.compile(r"^(\*|[A-Za-z0-9_.:-]{1,64})$")
MAX_EVENT_NAMES = 50


class WebhookSerializer(serializers.ModelSerializer):
    app = serializers.UUIDField(source="app_id", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Webhook
        fields = ["id", "app", "url", "events", "active", "created_by", "created_at", "updated_at"]


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(read_only=True, help_text="shown this once; store it to verify BSN-Signature")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]


def _events_field(**kw) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.RegexField(
            EVENT_NAME_RE.pattern, error_messages={"invalid": 'an event name (1–64 of A–Z a–z 0–9 _ . : -) or "*"'}
        ),
        min_length=1,
        max_length=MAX_EVENT_NAMES,
        help_text='event names (e.g. "accepted"), or ["*"] for every event of the app',
        **kw,
    )


def _dedupe(value: list[str]) -> list[str]:
    return ["*"] if "*" in value else list(dict.fromkeys(value))


class WebhookCreateInputSerializer(StrictInputSerializer):
    url = serializers.URLField(max_length=2000, help_text="http(s) URL receiving signed JSON POSTs")
    events = _events_field()
    secret = serializers.CharField(
        min_length=16, max_length=256, required=False, help_text="HMAC key; generated when absent"
    )

    def validate_events(self, value):
        return _dedupe(value)


class WebhookUpdateInputSerializer(StrictInputSerializer):
    not_here = {"secret": "the secret is set at creation; create a new webhook to rotate it"}

    url = serializers.URLField(max_length=2000, required=False)
    events = _events_field(required=False)
    active = serializers.BooleanField(required=False)

    def validate_events(self, value):
        return _dedupe(value)

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("nothing to change: send url, events or active")
        return attrs


class DeliverySerializer(serializers.ModelSerializer):
    webhook = serializers.UUIDField(source="webhook_id", read_only=True)
    name = serializers.SerializerMethodField()

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "webhook",
            "event_key",
            "name",
            "height",
            "status",
            "attempts",
            "response_code",
            "latency_ms",
            "last_error",
            "created_at",
            "first_attempt_at",
            "last_attempt_at",
            "next_attempt_at",
            "finished_at",
            "redeliveries",
            "event",
        ]

    def get_name(self, delivery) -> str:
        return str(delivery.event.get("name", ""))

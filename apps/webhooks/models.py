"""Webhooks of a chain app and their deliveries, one row per event per webhook (docs/webhooks.md)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.chainapps.models import ChainApp
from apps.common.models import TimeStamped


class Webhook(TimeStamped):
    """An endpoint of the tenant that receives the app's contract events, signed with its secret."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    app = models.ForeignKey(ChainApp, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list, help_text='event names, or ["*"] for every event')
    secret_encrypted = models.TextField(help_text="HMAC key, encrypted at rest (apps/common/crypto.py)")
    active = models.BooleanField(default=True)
    events_since = models.DateTimeField(
        default=timezone.now, help_text="events of blocks made from then on are delivered (creation, reactivation)"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.app_id} → {self.url}"

    def wants(self, name: str) -> bool:
        return "*" in self.events or name in self.events


class WebhookDelivery(models.Model):
    """One event for one webhook: sent in chain order, retried with backoff, succeeded or finally failed."""

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for its turn or its next attempt
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # retried for the whole window, or refused for good (an address not allowed)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event_key = models.CharField(max_length=200, help_text="ChainEvent.key: app:height:index:seq")
    height = models.BigIntegerField()
    tx_index = models.IntegerField()
    seq = models.IntegerField()
    event = models.JSONField(help_text="the event as it is sent (docs/webhooks.md)")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    first_attempt_at = models.DateTimeField(null=True, blank=True, help_text="start of the retry window")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="when pending: not before this")
    finished_at = models.DateTimeField(null=True, blank=True)
    response_code = models.IntegerField(null=True, blank=True)
    latency_ms = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    redeliveries = models.IntegerField(default=0)

    class Meta:
        ordering = ["height", "tx_index", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["webhook", "event_key"], name="webhookdelivery_unique_event"),
        ]
        indexes = [
            models.Index(fields=["webhook", "status", "height", "tx_index", "seq"], name="webhookdelivery_queue"),
            models.Index(fields=["status", "next_attempt_at"], name="webhookdelivery_due"),
        ]

    def __str__(self) -> str:
        return f"{self.webhook_id}/{self.event_key} {self.status}"

"""How far each consumer has been handed each app's committed blocks (docs/events.md)."""

from __future__ import annotations

from django.db import models

from apps.chainapps.models import ChainApp


class EventFeed(models.Model):
    """One row per app with an event consumer: the row two readers lock, so only one pumps the app."""

    app = models.OneToOneField(ChainApp, on_delete=models.CASCADE, primary_key=True, related_name="event_feed")
    node_height = models.BigIntegerField(default=0, help_text="the chain head the last read saw")
    pumped_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return f"feed {self.app_id}"


class EventCursor(models.Model):
    """The last height whose events one consumer of one app has processed (its ``on_chain_events`` returned)."""

    app = models.ForeignKey(ChainApp, on_delete=models.CASCADE, related_name="event_cursors")
    consumer = models.CharField(max_length=64, help_text="a name in apps.events.feed.CONSUMERS")
    height = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["app", "consumer"]
        constraints = [models.UniqueConstraint(fields=["app", "consumer"], name="eventcursor_unique_app_consumer")]

    def __str__(self) -> str:
        return f"{self.consumer}@{self.app_id}:{self.height}"

"""The webhooks' side of the event reader (apps.events.feed.CONSUMERS["webhooks"])."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from apps.chainapps.models import ChainApp
from apps.events.feed import ChainEvent
from apps.webhooks.models import Webhook
from apps.webhooks.services import deliveries_create


def interested_apps() -> Iterable[UUID]:
    """Apps meant to run with at least one active webhook (a stopped app makes no blocks)."""
    webhooks = Webhook.objects.filter(active=True, app__desired_state=ChainApp.DesiredState.RUNNING)
    return webhooks.values_list("app_id", flat=True).distinct()


def on_chain_events(app_id: UUID, events: list[ChainEvent]) -> None:
    """Queue a delivery per matching webhook and event; replays add nothing (unique event key)."""
    deliveries_create(app_id=app_id, events=events)

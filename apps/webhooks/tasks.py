"""Webhook delivery tasks: ids only through the broker; the rows say what is due."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

# Retries further off than this are left to the beat (webhooks_dispatch) instead of an ETA
# message: a Redis broker redelivers unacked ETA messages after its visibility timeout.
MAX_ETA_S = 30


@shared_task(acks_late=True)  # idempotent: the rows and the webhook's row lock decide what is sent
def webhook_deliver_task(webhook_id: str) -> int:
    from apps.webhooks.services import enqueue_delivery, webhook_deliver

    attempts, again = webhook_deliver(webhook_id)
    if again is not None and (again - timezone.now()).total_seconds() <= MAX_ETA_S:
        enqueue_delivery(webhook_id, at=again)
    return attempts


@shared_task
def webhooks_dispatch() -> int:
    """Beat: wake the sender of every webhook with a due delivery."""
    from apps.webhooks.services import due_webhook_ids, enqueue_delivery

    ids = due_webhook_ids()
    for webhook_id in ids:
        enqueue_delivery(webhook_id)
    return len(ids)


@shared_task
def webhooks_purge() -> int:
    """Beat: the delivery log keeps finished deliveries BSN_WEBHOOKS_LOG_DAYS days."""
    from apps.webhooks.services import deliveries_purge

    return deliveries_purge()

"""Webhooks: registration, and deliveries sent at least once and in order per webhook.

Order: a webhook's pending deliveries are sent oldest event first (height, transaction
index, event seq); the next one is not attempted until the one before it succeeded or
finally failed. One sender per webhook at a time: ``webhook_deliver`` holds the webhook's
row lock (``SKIP LOCKED``: a second worker leaves at once) while it attempts, so a crash
mid-attempt releases the lock and leaves the delivery pending: it is sent again (at
least once; receivers dedupe on the ``id`` of the body or the ``BSN-Delivery`` header).

Retries: exponential backoff with jitter, ``BSN_WEBHOOKS_RETRY_BASE_S`` doubling up to
``BSN_WEBHOOKS_RETRY_MAX_S``, for ``BSN_WEBHOOKS_RETRY_WINDOW_S`` (24 h) from the first
attempt; an attempt that would fall past the window marks the delivery failed. Time is a
parameter (``now``) so tests travel through the 24 hours instead of waiting.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.chainapps.models import ChainApp
from apps.common.crypto import decrypt_secret, encrypt_secret
from apps.common.errors import DomainError
from apps.webhooks import sender
from apps.webhooks.models import Webhook, WebhookDelivery

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 - a label in front of generated secrets, not a secret
MAX_WEBHOOKS_PER_APP = 20
MAX_SENDS_PER_RUN = 100  # one webhook_deliver task: then it hands over to a fresh task


class AddressNotAllowed(DomainError):
    status_code = 400
    code = "address-not-allowed"


class InvalidWebhook(DomainError):
    status_code = 400
    code = "invalid"


class WebhookConflict(DomainError):
    status_code = 409
    code = "conflict"


# --------------------------------------------------------------------------- registration


def _check_url(url: str) -> str:
    try:
        _, host, _, _ = sender.split_url(url)
    except ValueError as exc:
        raise InvalidWebhook(f"url: {exc}", extra={"errors": {"url": [str(exc)]}}) from None
    if settings.BSN_WEBHOOKS_ALLOW_PRIVATE:
        return url
    # A literal address is judged now; a name is judged at every delivery (it may change).
    address = sender.literal_address(host)
    if (address is not None and not sender.address_allowed(address)) or host.lower().rstrip(".") == "localhost":
        raise AddressNotAllowed(
            f"{host} is a private, loopback, link-local, multicast or reserved address; webhooks reach public "
            "addresses only (BSN_WEBHOOKS_ALLOW_PRIVATE is off)",
            extra={"errors": {"url": ["address not allowed"]}},
        )
    return url


def _audit(action: str, webhook: Webhook, actor, request, **data: Any) -> None:
    audit_record(
        action=action,
        object_type="webhook",
        object_id=str(webhook.pk),
        tenant=webhook.app.tenant,
        actor=actor,
        data={"app": str(webhook.app_id), **data},
        request=request,
    )


def webhook_create(
    *, app: ChainApp, actor, url: str, events: list[str], secret: str | None = None, request=None
) -> tuple[Webhook, str]:
    """A new webhook and its secret in clear (shown once: only the encrypted form is kept)."""
    _check_url(url)
    secret = secret or SECRET_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        ChainApp.objects.select_for_update().filter(pk=app.pk).first()  # the count below is per app
        if Webhook.objects.filter(app=app).count() >= MAX_WEBHOOKS_PER_APP:
            raise WebhookConflict(f"an app has at most {MAX_WEBHOOKS_PER_APP} webhooks")
        webhook = Webhook.objects.create(
            app=app,
            url=url,
            events=events,
            secret_encrypted=encrypt_secret(secret),
            created_by=actor if getattr(actor, "pk", None) else None,
        )
        _audit("webhook.create", webhook, actor, request, url=url, events=events)
    return webhook, secret


def webhook_update(*, webhook: Webhook, actor, changes: dict[str, Any], request=None) -> Webhook:
    """Change url, events or active; reactivating wakes the sender for what waited."""
    if "url" in changes:
        _check_url(changes["url"])
    with transaction.atomic():
        locked = Webhook.objects.select_for_update().get(pk=webhook.pk)
        if changes.get("active") and not locked.active:
            locked.events_since = timezone.now()  # what was committed while it was off is not sent
        for field, value in changes.items():
            setattr(locked, field, value)
        locked.save()
        _audit("webhook.update", locked, actor, request, **changes)
        if locked.active:
            transaction.on_commit(lambda: enqueue_delivery(str(locked.pk)))
    return locked


def webhook_delete(*, webhook: Webhook, actor, request=None) -> None:
    """Removes the webhook and its delivery log; nothing more is sent to it."""
    with transaction.atomic():
        _audit("webhook.delete", webhook, actor, request, url=webhook.url)
        webhook.delete()


def delivery_redeliver(*, delivery: WebhookDelivery, actor, request=None, now: datetime | None = None):
    """Send a finished delivery again: it is pending with a fresh retry window, in its place
    in the order (older than anything still pending, so it goes next)."""
    now = now or timezone.now()
    with transaction.atomic():
        # of=self: the joined webhook, app and tenant rows are read, not locked (a sender
        # holds the webhook's row while it attempts; locking it here could deadlock with it).
        locked = (
            WebhookDelivery.objects.select_for_update(of=("self",))
            .select_related("webhook__app__tenant")
            .get(pk=delivery.pk)
        )
        if locked.status == WebhookDelivery.Status.PENDING:
            raise WebhookConflict("this delivery is still pending; it is sent on its own", code="delivery-pending")
        locked.status = WebhookDelivery.Status.PENDING
        locked.first_attempt_at = None
        locked.next_attempt_at = now
        locked.finished_at = None
        locked.redeliveries += 1
        locked.save()
        _audit("webhook.redeliver", locked.webhook, actor, request, delivery=str(locked.pk), event=locked.event_key)
        transaction.on_commit(lambda: enqueue_delivery(str(locked.webhook_id)))
    return locked


# --------------------------------------------------------------------------- events in (the consumer)


def event_document(event) -> dict[str, Any]:
    """The ``event`` member of a delivery body (docs/webhooks.md)."""
    return {
        "key": event.key,
        "name": event.name,
        "payload": event.payload,
        "contract": event.contract,
        "function": event.function,
        "signer": event.signer,
        "tx_id": event.tx_id,
        "height": event.height,
        "index": event.index,
        "seq": event.seq,
        "block_time_ms": event.block_time_ms,
    }


def deliveries_create(*, app_id, events: list) -> int:
    """One pending delivery per (active webhook wanting it, event); idempotent on the event key.

    A webhook gets the events of blocks made since it was created or last reactivated
    (block time, ``events_since``), not the app's history."""
    hooks = list(Webhook.objects.filter(app_id=app_id, active=True))
    rows = []
    for hook in hooks:
        since_ms = int(hook.events_since.timestamp() * 1000)
        for event in events:
            if event.block_time_ms >= since_ms and hook.wants(event.name):
                rows.append(
                    WebhookDelivery(
                        webhook=hook,
                        event_key=event.key,
                        height=event.height,
                        tx_index=event.index,
                        seq=event.seq,
                        event=event_document(event),
                    )
                )
    if not rows:
        return 0
    made = WebhookDelivery.objects.bulk_create(rows, ignore_conflicts=True)
    woken = sorted({str(row.webhook_id) for row in rows})
    transaction.on_commit(lambda: [enqueue_delivery(hook_id) for hook_id in woken])
    return len(made)


# --------------------------------------------------------------------------- deliveries out


def retry_delay(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempts + 1`` after ``attempts`` failed: base·2^(n−1), capped,
    with ±20 % jitter so that many webhooks failing together do not retry in step."""
    base = settings.BSN_WEBHOOKS_RETRY_BASE_S * 2 ** max(attempts - 1, 0)
    delay = min(base, settings.BSN_WEBHOOKS_RETRY_MAX_S)
    return delay * (rng or random).uniform(0.8, 1.2)


def delivery_body(delivery: WebhookDelivery, webhook: Webhook) -> bytes:
    return sender.body_bytes(
        {
            "id": str(delivery.pk),
            "type": "contract.event",
            "webhook": str(webhook.pk),
            "app": str(webhook.app_id),
            "event": delivery.event,
        }
    )


def _attempt(webhook: Webhook, delivery: WebhookDelivery, now: datetime, send: Callable) -> sender.Outcome:
    body = delivery_body(delivery, webhook)
    headers = sender.headers_for(
        secret=decrypt_secret(webhook.secret_encrypted),
        body=body,
        timestamp=int(now.timestamp()),
        delivery_id=str(delivery.pk),
        event_name=str(delivery.event.get("name", "")),
    )
    return send(
        webhook.url,
        body,
        headers,
        allow_private=settings.BSN_WEBHOOKS_ALLOW_PRIVATE,
        connect_timeout=settings.BSN_WEBHOOKS_CONNECT_TIMEOUT,
        read_timeout=settings.BSN_WEBHOOKS_READ_TIMEOUT,
    )


def _record(delivery: WebhookDelivery, outcome: sender.Outcome, now: datetime) -> None:
    delivery.attempts += 1
    delivery.first_attempt_at = delivery.first_attempt_at or now
    delivery.last_attempt_at = now
    delivery.response_code = outcome.status
    delivery.latency_ms = outcome.latency_ms
    delivery.last_error = outcome.error[:1000]
    if outcome.ok:
        delivery.status = WebhookDelivery.Status.SUCCEEDED
        delivery.next_attempt_at = None
        delivery.finished_at = now
    else:
        window_end = delivery.first_attempt_at + timedelta(seconds=settings.BSN_WEBHOOKS_RETRY_WINDOW_S)
        retry_at = now + timedelta(seconds=retry_delay(delivery.attempts))
        if outcome.permanent or retry_at > window_end:
            delivery.status = WebhookDelivery.Status.FAILED
            delivery.next_attempt_at = None
            delivery.finished_at = now
        else:
            delivery.next_attempt_at = retry_at
    delivery.save()


def webhook_deliver(
    webhook_id: str, *, now: Callable[[], datetime] = timezone.now, send: Callable = sender.send
) -> tuple[int, datetime | None]:
    """Send the webhook's due deliveries in order; (attempts made, when to come back or None).

    Stops at the first delivery that is not due yet or failed an attempt (the ones after
    it wait), when nothing is pending, or after MAX_SENDS_PER_RUN attempts.
    """
    attempts = 0
    while attempts < MAX_SENDS_PER_RUN:
        with transaction.atomic():
            webhook = Webhook.objects.select_for_update(skip_locked=True).filter(pk=webhook_id, active=True).first()
            if webhook is None:  # gone, paused, or another worker is sending for it
                return attempts, None
            head = webhook.deliveries.filter(status=WebhookDelivery.Status.PENDING).order_by(
                "height", "tx_index", "seq"
            )
            delivery = head.select_for_update().first()
            if delivery is None:
                return attempts, None
            moment = now()
            if delivery.next_attempt_at is not None and delivery.next_attempt_at > moment:
                return attempts, delivery.next_attempt_at
            outcome = _attempt(webhook, delivery, moment, send)
            _record(delivery, outcome, moment)
            attempts += 1
            if delivery.status == WebhookDelivery.Status.PENDING:  # failed, retried later: the rest waits
                return attempts, delivery.next_attempt_at
    return attempts, now()


def enqueue_delivery(webhook_id: str, at: datetime | None = None) -> None:
    from apps.webhooks.tasks import webhook_deliver_task

    if at is None:
        webhook_deliver_task.delay(webhook_id)
    else:
        webhook_deliver_task.apply_async((webhook_id,), eta=at)


def due_webhook_ids(now: datetime | None = None) -> list[str]:
    """Active webhooks with a pending delivery whose attempt is due (the beat's safety net
    for a wake-up message lost with a killed worker)."""
    now = now or timezone.now()
    ids = (
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, webhook__active=True)
        .exclude(next_attempt_at__gt=now)
        .values_list("webhook_id", flat=True)
        .distinct()
    )
    return [str(i) for i in ids]


def deliveries_purge(*, now: datetime | None = None) -> int:
    """Remove finished deliveries older than ``BSN_WEBHOOKS_LOG_DAYS``; pending ones stay."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.BSN_WEBHOOKS_LOG_DAYS)
    finished = WebhookDelivery.objects.exclude(status=WebhookDelivery.Status.PENDING)
    deleted, _ = finished.filter(finished_at__lt=cutoff).delete()
    return deleted

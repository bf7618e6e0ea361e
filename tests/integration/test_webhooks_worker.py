"""Webhooks in a real Celery worker (with beat): events of a real trade-finance node reach a
loopback receiver, signed and in chain order, and a worker SIGKILLed mid-pump (its read of
the node in flight, the app's feed row locked) and again mid-delivery loses nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import time

import pytest
from django.db import DatabaseError, transaction

from apps.events.models import EventCursor, EventFeed
from apps.webhooks.models import WebhookDelivery
from tests.conftest import _client_for
from tests.integration.conftest import wait_for
from tests.webhooks.conftest import receiver, trade_app  # noqa: F401 - fixtures, taken by name below

pytestmark = pytest.mark.integration

WORKER_ENV = {
    "BSN_WEBHOOKS_ALLOW_PRIVATE": "true",
    "BSN_EVENTS_PUMP_INTERVAL": "0.5",
    "BSN_WEBHOOKS_DISPATCH_INTERVAL": "1",
    "BSN_WEBHOOKS_RETRY_BASE_S": "0.5",
    "BSN_WEBHOOKS_RETRY_MAX_S": "2",
    "BSN_GATEWAY_READ_TIMEOUT": "30",  # a pump blocked on a stopped node holds its lock this long
}


LC_TERMS = {
    "applicant": "buyer",
    "beneficiary": "seller",
    "amount": 100_000,
    "currency": "CNY",
    "documents_required": ["invoice"],
}


def signed_ok(secret: str, item) -> bool:
    parts = dict(p.split("=", 1) for p in item.headers["BSN-Signature"].split(","))
    mac = hmac.new(secret.encode(), f"{parts['t']}.".encode() + item.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, parts["v1"])


def feed_locked(app_id) -> bool:
    """True while a worker holds the app's feed row (it is inside pump_app)."""
    try:
        with transaction.atomic():
            list(EventFeed.objects.select_for_update(nowait=True).filter(pk=app_id))
        return False
    except DatabaseError:
        return True


def test_worker_sigkilled_mid_pump_and_mid_delivery_loses_nothing(transactional_db, request, worker_factory, settings):
    tf, inbox = request.getfixturevalue("trade_app"), request.getfixturevalue("receiver")
    settings.BSN_WEBHOOKS_ALLOW_PRIVATE = True
    app = tf.app
    api = _client_for(tf.membership)
    hook = api.post(f"/api/v1/apps/{app.pk}/webhooks", {"url": inbox.url + "/in", "events": ["*"]}, format="json")
    assert hook.status_code == 201, hook.content
    hook = hook.json()

    def slow_ok(item):
        time.sleep(0.15)  # a receiver that takes its time: deliveries are in flight when the worker dies
        return 200

    inbox.status_for = slow_ok
    for n in range(6):
        tf.letter_of_credit(f"LC-{n}", outcome="accept" if n % 2 == 0 else "reject")
    expected_count = 18
    head = tf.node.chain()["height"]

    # 1. Kill mid-pump: the node is stopped, so the worker's read of GET /events hangs while
    #    it holds the app's feed row; SIGKILL it there.
    tf.node.proc.send_signal(signal.SIGSTOP)
    try:
        worker = worker_factory([], beat=True, env=WORKER_ENV)
        wait_for(lambda: feed_locked(app.pk), timeout=30, interval=0.05, message="a pump holding the feed row")
        worker.kill()
    finally:
        tf.node.proc.send_signal(signal.SIGCONT)
    assert not EventCursor.objects.filter(app=app, consumer="webhooks", height__gt=0).exists()
    assert not WebhookDelivery.objects.exists() and inbox.received == []

    # 2. A new worker pumps and starts delivering; kill it mid-delivery.
    worker = worker_factory([], beat=True, env=WORKER_ENV)
    wait_for(lambda: len(inbox.received) >= 4, timeout=60, message="the first deliveries")
    worker.kill()
    delivered_before = len(inbox.received)
    assert delivered_before < expected_count, "the kill came too late to interrupt anything"

    # 3. A third worker finishes: every event arrives, the first arrival of each in chain order.
    started = time.monotonic()
    worker_factory([], beat=True, env=WORKER_ENV)
    rows = WebhookDelivery.objects.filter(webhook_id=hook["id"])
    wait_for(
        lambda: rows.count() == expected_count and not rows.exclude(status="succeeded").exists(),
        timeout=90,
        message="every delivery succeeded",
    )
    bodies = [json.loads(r.body) for r in inbox.received]
    keys = [b["event"]["key"] for b in bodies]
    first_seen = list(dict.fromkeys(keys))
    chain_order = list(rows.order_by("height", "tx_index", "seq").values_list("event_key", flat=True))
    assert first_seen == chain_order and len(chain_order) == expected_count
    lcs = [b["event"]["payload"]["lc_id"] for b in bodies]
    assert list(dict.fromkeys(lcs)) == [f"LC-{n}" for n in range(6)]
    assert all(signed_ok(hook["secret"], item) for item in inbox.received)
    assert EventCursor.objects.get(app=app, consumer="webhooks").height >= head
    # 4. With a worker running: from the commit of an LC's last step to its event at the receiver.
    inbox.status_for = lambda item: 200
    before = len(inbox.received)
    committed = time.monotonic()
    tf.submit("bank", "issue", {**LC_TERMS, "lc_id": "LC-late"})
    wait_for(lambda: len(inbox.received) > before, timeout=30, interval=0.02, message="the late event")
    latency = inbox.received[before].at - committed
    assert json.loads(inbox.received[before].body)["event"]["payload"]["lc_id"] == "LC-late"

    duplicates = len(keys) - len(first_seen)
    print(
        f"\nFIGURE worker-kill: {expected_count} events, {len(keys)} requests ({duplicates} duplicate after the "
        f"kills), {delivered_before} before the second kill, rest in {time.monotonic() - started:.1f} s; "
        f"commit → receiver {latency:.2f} s (pump every 0.5 s)"
    )

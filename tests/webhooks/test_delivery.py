"""Events of a real trade-finance node delivered to a loopback receiver: signed, in order,
retried, redelivered. The reader and the sender are called as the worker calls them;
tests/integration/test_webhooks_worker.py runs them in a real Celery worker."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.events.models import EventCursor
from apps.events.services import consumer_resolve, pump_app
from apps.webhooks.models import Webhook, WebhookDelivery
from apps.webhooks.services import webhook_deliver

pytestmark = pytest.mark.django_db


def verify(secret: str, header: str, raw_body: bytes, tolerance_s: int = 300) -> bool:
    """The verifier of docs/webhooks.md, copied from the page (not from the code)."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


def webhooks_only():
    """The reader with the webhooks consumer alone (the DCEP one is another engineer's)."""
    return [consumer_resolve("webhooks", "apps.webhooks.consumer.on_chain_events")]


def create_hook(client, app, url: str, events=("*",)) -> dict:
    resp = client.post(f"/api/v1/apps/{app.pk}/webhooks", {"url": url, "events": list(events)}, format="json")
    assert resp.status_code == 201, resp.content
    return resp.json()


def keys_of(received) -> list[str]:
    return [json.loads(r.body)["event"]["key"] for r in received]


def deliver_all(hook_id: str, *, timeout: float = 30.0) -> int:
    """Run the sender as the worker would, waiting for each retry, until nothing is pending."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while time.monotonic() < deadline:
        made, again = webhook_deliver(hook_id)
        attempts += made
        if again is None:
            return attempts
        time.sleep(max(0.0, (again - timezone.now()).total_seconds()))
    pytest.fail("deliveries still pending")


def test_contract_events_arrive_signed_in_chain_order(trade_app, trade_client, receiver, allow_private):
    hook = create_hook(trade_client, trade_app.app, receiver.url + "/bsn")
    receipts = trade_app.letter_of_credit("LC-1")

    assert pump_app(trade_app.app.pk, resolved=webhooks_only()) >= 3
    cursor = EventCursor.objects.get(app=trade_app.app, consumer="webhooks")
    assert cursor.height == trade_app.node.chain()["height"]
    # The app users' `user_added` events came before the webhook: not delivered.
    assert WebhookDelivery.objects.filter(webhook_id=hook["id"]).count() == 3

    assert deliver_all(hook["id"]) == 3
    bodies = [json.loads(r.body) for r in receiver.received]
    assert [b["event"]["name"] for b in bodies] == ["issued", "presented", "accepted"]
    assert [b["event"]["tx_id"] for b in bodies] == [r["tx_id"] for r in receipts]
    for item, body in zip(receiver.received, bodies, strict=True):
        assert verify(hook["secret"], item.headers["BSN-Signature"], item.body)
        assert not verify(hook["secret"], item.headers["BSN-Signature"], item.body + b" ")
        assert not verify("another-secret-0123456789", item.headers["BSN-Signature"], item.body)
        assert item.headers["BSN-Delivery"] == body["id"]
        assert item.headers["BSN-Event"] == body["event"]["name"]
        assert item.headers["Content-Type"] == "application/json"
        assert (body["type"], body["webhook"], body["app"]) == ("contract.event", hook["id"], str(trade_app.app.pk))
    accepted = bodies[2]["event"]
    assert accepted["payload"] == {"lc_id": "LC-1"}
    assert (accepted["contract"], accepted["function"], accepted["signer"]) == ("trade_finance", "accept", "bank")
    assert accepted["key"] == f"{trade_app.app.pk}:{accepted['height']}:{accepted['index']}:{accepted['seq']}"

    log = trade_client.get(f"/api/v1/apps/{trade_app.app.pk}/webhooks/{hook['id']}/deliveries").json()
    assert [d["name"] for d in log["results"]] == ["accepted", "presented", "issued"]  # newest first
    first = log["results"][0]
    assert (first["status"], first["attempts"], first["response_code"]) == ("succeeded", 1, 200)
    assert first["latency_ms"] is not None and first["next_attempt_at"] is None

    # Read again from the start (a crash before the cursor moved): nothing is queued twice.
    EventCursor.objects.filter(pk=cursor.pk).update(height=0)
    pump_app(trade_app.app.pk, resolved=webhooks_only())
    assert WebhookDelivery.objects.filter(webhook_id=hook["id"]).count() == 3
    assert deliver_all(hook["id"]) == 0 and len(receiver.received) == 3


def test_only_the_named_events_and_only_active_webhooks(trade_app, trade_client, receiver, allow_private):
    wanted = create_hook(trade_client, trade_app.app, receiver.url + "/a", events=["accepted", "rejected"])
    paused = create_hook(trade_client, trade_app.app, receiver.url + "/p")
    url = f"/api/v1/apps/{trade_app.app.pk}/webhooks/{paused['id']}"
    assert trade_client.patch(url, {"active": False}, format="json").json()["active"] is False
    trade_app.letter_of_credit("LC-A")
    trade_app.letter_of_credit("LC-R", outcome="reject")
    pump_app(trade_app.app.pk, resolved=webhooks_only())
    deliver_all(wanted["id"])
    deliver_all(paused["id"])
    got = [
        (json.loads(r.body)["event"]["name"], json.loads(r.body)["event"]["payload"]["lc_id"])
        for r in receiver.received
    ]
    assert got == [("accepted", "LC-A"), ("rejected", "LC-R")]
    assert not WebhookDelivery.objects.filter(webhook_id=paused["id"]).exists()

    # Reactivated: what was committed while it was off is never sent; what comes after is.
    assert trade_client.patch(url, {"active": True}, format="json").json()["active"] is True
    trade_app.letter_of_credit("LC-after")
    pump_app(trade_app.app.pk, resolved=webhooks_only())
    deliver_all(paused["id"])
    lcs = {json.loads(r.body)["event"]["payload"]["lc_id"] for r in receiver.received if "/p" in r.path}
    assert lcs == {"LC-after"}


def test_order_is_kept_while_the_receiver_fails_then_recovers(
    trade_app, trade_client, receiver, allow_private, settings
):
    settings.BSN_WEBHOOKS_RETRY_BASE_S = 0.2
    settings.BSN_WEBHOOKS_RETRY_MAX_S = 1.0
    failing_until = 6  # the first six requests get 503

    def status_for(item):
        return 503 if len(receiver.received) <= failing_until else 200

    receiver.status_for = status_for
    hook = create_hook(trade_client, trade_app.app, receiver.url + "/flaky")
    trade_app.letter_of_credit("LC-1")
    trade_app.letter_of_credit("LC-2", outcome="reject")
    pump_app(trade_app.app.pk, resolved=webhooks_only())
    started = time.monotonic()
    attempts = deliver_all(hook["id"])
    took = time.monotonic() - started

    order = list(WebhookDelivery.objects.filter(webhook_id=hook["id"]).order_by("height", "tx_index", "seq"))
    expected = [d.event_key for d in order]
    seen = keys_of(receiver.received)
    assert attempts == len(seen) == 6 + 6  # 6 failures, then 6 events once each
    # Never a later event before an earlier one succeeded: the first one is retried alone.
    assert seen[:7] == [expected[0]] * 7
    assert seen[6:] == expected
    assert all(d.status == "succeeded" for d in order)
    first = order[0]
    assert (first.attempts, first.response_code) == (7, 200)
    gaps = [b.at - a.at for a, b in zip(receiver.received[:7], receiver.received[1:7], strict=False)]
    # base 0.2 s doubling (±20 % jitter), capped at 1 s: 0.2, 0.4, 0.8, 1, 1, 1
    for gap, nominal in zip(gaps, [0.2, 0.4, 0.8, 1.0, 1.0, 1.0], strict=True):
        assert nominal * 0.8 - 0.05 <= gap <= nominal * 1.2 + 0.5, (gaps, nominal)
    print(f"\nFIGURE retry/order: {attempts} attempts, gaps {[round(g, 2) for g in gaps]} s, {took:.2f} s in all")


def test_retries_for_24_hours_then_failed_and_the_next_one_goes(trade_app, trade_client, receiver, allow_private):
    receiver.status_for = lambda item: 500
    hook = create_hook(trade_client, trade_app.app, receiver.url + "/down")
    trade_app.letter_of_credit("LC-1")
    pump_app(trade_app.app.pk, resolved=webhooks_only())
    clock = [timezone.now()]
    start = clock[0]
    first = WebhookDelivery.objects.filter(webhook_id=hook["id"]).order_by("height", "tx_index", "seq").first()
    moments = []
    for _ in range(100):
        made, again = webhook_deliver(hook["id"], now=lambda: clock[0])
        moments += [clock[0]] * made
        first.refresh_from_db()
        if first.status != "pending":
            break
        assert again is not None and again > clock[0]
        clock[0] = again  # travel to the next attempt
    first.refresh_from_db()
    assert first.status == "failed"
    assert first.finished_at - first.first_attempt_at <= timedelta(hours=24)
    attempts_first = first.attempts
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(moments[:attempts_first])]
    assert 25 <= attempts_first <= 40, attempts_first
    assert 8 <= gaps[0] <= 12 and 16 <= gaps[1] <= 24  # 10 s, then 20 s (±20 %)
    assert max(gaps) <= 3600 * 1.2
    # Then the next delivery got its first attempt in the same run.
    second = WebhookDelivery.objects.filter(webhook_id=hook["id"]).exclude(pk=first.pk).order_by("height").first()
    assert second.attempts == 1 and second.status == "pending"
    print(
        f"\nFIGURE 24h: {attempts_first} attempts over {(first.finished_at - start).total_seconds() / 3600:.1f} h "
        f"before failed; first gaps {[round(g) for g in gaps[:10]]} s"
    )


def test_redeliver_sends_a_finished_delivery_again(trade_app, trade_client, receiver, allow_private):
    hook = create_hook(trade_client, trade_app.app, receiver.url + "/again")
    trade_app.letter_of_credit("LC-1")
    pump_app(trade_app.app.pk, resolved=webhooks_only())
    deliver_all(hook["id"])
    base = f"/api/v1/apps/{trade_app.app.pk}/webhooks/{hook['id']}/deliveries"
    oldest = trade_client.get(base, {"ordering": "height"}).json()["results"][0]
    resp = trade_client.post(f"{base}/{oldest['id']}/redeliver")
    assert resp.status_code == 200, resp.content
    assert (resp.json()["status"], resp.json()["redeliveries"]) == ("pending", 1)
    again = trade_client.post(f"{base}/{oldest['id']}/redeliver")
    assert again.status_code == 409 and again.json()["code"] == "delivery-pending"
    assert deliver_all(hook["id"]) == 1
    ids = [json.loads(r.body)["id"] for r in receiver.received]
    assert ids[-1] == oldest["id"] and ids.count(oldest["id"]) == 2
    assert verify(hook["secret"], receiver.received[-1].headers["BSN-Signature"], receiver.received[-1].body)
    done = trade_client.get(f"{base}/{oldest['id']}").json()
    assert (done["status"], done["attempts"], done["redeliveries"]) == ("succeeded", 2, 1)
    assert AuditEvent.objects.filter(action="webhook.redeliver", object_id=hook["id"]).count() == 1


def test_a_name_resolving_to_loopback_is_refused_at_delivery(trade_app, trade_client, receiver, settings):
    settings.BSN_WEBHOOKS_ALLOW_PRIVATE = True
    hook = create_hook(trade_client, trade_app.app, f"http://localhost:{receiver.port}/x")
    settings.BSN_WEBHOOKS_ALLOW_PRIVATE = False  # e.g. a name that pointed elsewhere at creation
    trade_app.letter_of_credit("LC-1")
    pump_app(trade_app.app.pk, resolved=webhooks_only())
    webhook_deliver(hook["id"])
    rows = list(WebhookDelivery.objects.filter(webhook_id=hook["id"]))
    assert {r.status for r in rows} == {"failed"} and len(rows) == 3
    assert all(r.last_error.startswith("address-not-allowed") and r.attempts == 1 for r in rows)
    assert receiver.received == []
    assert Webhook.objects.get(pk=hook["id"]).active  # the webhook stays; its log says why

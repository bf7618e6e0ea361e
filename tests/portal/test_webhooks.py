"""Webhooks in the portal (/portal/apps/<id>/webhooks/): create with the secret shown once,
the delivery log after real deliveries to a local receiver, pause/resume, redeliver, delete;
roles, other tenants, bad input, CSRF."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from types import SimpleNamespace

import pytest

from apps.audit.models import AuditEvent
from apps.common.crypto import decrypt_secret
from apps.tenants.models import Role
from apps.webhooks import services
from apps.webhooks.models import Webhook, WebhookDelivery
from tests.api.conftest import make_app, row_counts
from tests.factories import MembershipFactory
from tests.portal.conftest import post, signed_in
from tests.portal.pages import (
    assert_not_found,
    assert_page,
    assert_redirect,
    assert_role_refused,
    audit_text,
    messages_of,
    queries,
)
from tests.webhooks import conftest as webhook_fixtures

pytestmark = pytest.mark.django_db

receiver, allow_private = webhook_fixtures.receiver, webhook_fixtures.allow_private  # fixtures
URL = "https://hooks.example.com/bsn"


@pytest.fixture
def app(owner, regions):
    return make_app(owner, "hooked", regions=("cn-beijing",), contract_template="trade_finance")


def hooks_url(app) -> str:
    return f"/portal/apps/{app.pk}/webhooks/"


def state() -> dict:
    return {
        **row_counts(),
        "webhooks": list(Webhook.objects.order_by("created_at").values_list("url", "events", "active")),
        "deliveries": list(WebhookDelivery.objects.order_by("height").values_list("status", "attempts")),
    }


def event(app, height: int, name: str = "accepted") -> SimpleNamespace:
    """A contract event as the event reader hands it over (apps/events)."""
    return SimpleNamespace(
        key=f"{app.pk}:{height}:0:0",
        name=name,
        payload={"lc": "LC-1", "height": height},
        contract="trade_finance",
        function="accept",
        signer="alice",
        tx_id=f"{height:064x}",
        height=height,
        index=0,
        seq=0,
        block_time_ms=int(time.time() * 1000) + 1000,
    )


def create(client, app, url: str, events: str = "*") -> tuple[Webhook, str]:
    resp = post(client, hooks_url(app), {"url": url, "events": events})
    page = assert_page(resp)
    assert resp["Cache-Control"] == "no-store"
    secret = page.split('id="secret" class="mono" readonly value="')[1].split('"')[0]
    return Webhook.objects.get(url=url), secret


def test_create_shows_the_secret_once(member, app):
    client = signed_in(member)
    empty = assert_page(client.get(hooks_url(app)))
    assert "No webhooks yet" in empty and 'for="id_url"' in empty and 'for="id_events"' in empty
    webhook, secret = create(client, app, URL, "accepted, rejected accepted")
    assert webhook.events == ["accepted", "rejected"]  # the API serializer's dedupe
    assert decrypt_secret(webhook.secret_encrypted) == secret and secret.startswith("whsec_")
    listing = assert_page(client.get(hooks_url(app)))
    detail = assert_page(client.get(f"{hooks_url(app)}{webhook.pk}/"))
    assert URL in listing and "accepted, rejected" in listing
    assert secret not in listing and secret not in detail and secret not in audit_text()
    assert AuditEvent.objects.filter(action="webhook.create", object_id=str(webhook.pk)).count() == 1


def test_the_delivery_log_shows_codes_and_attempts_of_real_deliveries(owner, app, receiver, allow_private):
    client = signed_in(owner)
    webhook, secret = create(client, app, receiver.url + "/hook")
    services.deliveries_create(app_id=app.pk, events=[event(app, 1), event(app, 2)])
    services.webhook_deliver(str(webhook.pk))
    assert len(receiver.received) == 2
    first = receiver.received[0]
    t, v1 = (part.split("=", 1)[1] for part in first.headers["BSN-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{t}.".encode() + first.body, hashlib.sha256).hexdigest()
    assert v1 == expected  # the secret the page showed is the one that signs
    receiver.status_for = lambda r: 503
    services.deliveries_create(app_id=app.pk, events=[event(app, 3, "rejected")])
    services.webhook_deliver(str(webhook.pk))
    page = assert_page(client.get(f"{hooks_url(app)}{webhook.pk}/"))
    assert page.count(">succeeded</span>") == 2 and page.count(">pending</span>") == 1
    assert '<td class="num">200</td>' in page and '<td class="num">503</td>' in page
    assert "next <time" in page  # the pending one says when it is tried again
    assert 'hx-trigger="every 5s"' in page  # live while one is pending
    failed_only = assert_page(client.get(f"{hooks_url(app)}{webhook.pk}/?status=pending"))
    assert failed_only.count(">pending</span>") == 1 and ">succeeded</span>" not in failed_only
    done_only = assert_page(client.get(f"{hooks_url(app)}{webhook.pk}/?status=succeeded"))
    assert done_only.count(">succeeded</span>") == 2 and "hx-trigger" not in done_only  # nothing to watch
    # Send a finished one again: it is pending again, audited.
    done = WebhookDelivery.objects.get(height=1)
    resp = post(client, f"{hooks_url(app)}{webhook.pk}/deliveries/{done.pk}/redeliver/")
    assert_redirect(resp, f"{hooks_url(app)}{webhook.pk}/")
    done.refresh_from_db()
    assert done.status == "pending" and done.redeliveries == 1
    assert AuditEvent.objects.filter(action="webhook.redeliver").count() == 1
    # A pending one cannot be: the reason is shown, nothing changes.
    again = post(client, f"{hooks_url(app)}{webhook.pk}/deliveries/{done.pk}/redeliver/")
    assert "still pending" in messages_of(client, again["Location"])
    done.refresh_from_db()
    assert done.redeliveries == 1


def test_pause_resume_and_delete(owner, app):
    client = signed_in(owner)
    webhook, _ = create(client, app, URL)
    url = f"{hooks_url(app)}{webhook.pk}/"
    assert_redirect(post(client, url + "active/", {"active": "false"}), url)
    assert "is paused" in messages_of(client, url) and not Webhook.objects.get(pk=webhook.pk).active
    assert_redirect(post(client, url + "active/", {"active": "true"}), url)
    assert Webhook.objects.get(pk=webhook.pk).active
    bad = post(client, url + "active/", {"active": "perhaps"})
    assert "Must be a valid boolean" in messages_of(client, bad["Location"])
    assert "Delete the webhook to" in assert_page(client.get(url + "delete/"))
    assert_redirect(post(client, url + "delete/"), hooks_url(app))
    assert not Webhook.objects.filter(pk=webhook.pk).exists()
    assert AuditEvent.objects.filter(action="webhook.delete").count() == 1
    assert_not_found(client.get(url))


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"url": "not a url", "events": "*"}, "Enter a valid URL."),
        ({"url": URL, "events": ""}, "This field is required."),
        ({"url": URL, "events": "bad/name"}, "an event name"),
        ({"url": "https://127.0.0.1/hook", "events": "*"}, "webhooks reach public addresses only"),
        ({"url": "https://localhost/hook", "events": "*"}, "webhooks reach public addresses only"),
    ],
)
def test_bad_input_shows_the_form_again(owner, app, form, message):
    client = signed_in(owner)
    before = state()
    page = assert_page(post(client, hooks_url(app), form), 400)
    assert message in page and 'class="field-error"' in page
    assert f'value="{form["url"]}"' in page  # what was typed is kept
    assert state() == before


def test_viewers_read_and_developers_write(owner, app):
    webhook, _ = create(signed_in(owner), app, URL)
    viewer = signed_in(MembershipFactory(tenant=owner.tenant, role=Role.VIEWER, user__username="vera"))
    before = state()
    page = assert_page(viewer.get(hooks_url(app)))
    assert URL in page and "Add a webhook" not in page
    assert "Pause" not in assert_page(viewer.get(f"{hooks_url(app)}{webhook.pk}/"))
    assert_role_refused(post(viewer, hooks_url(app), {"url": URL + "/2", "events": "*"}), "developer")
    assert_role_refused(post(viewer, f"{hooks_url(app)}{webhook.pk}/active/", {"active": "false"}), "developer")
    assert_role_refused(viewer.get(f"{hooks_url(app)}{webhook.pk}/delete/"), "developer")
    assert_role_refused(post(viewer, f"{hooks_url(app)}{webhook.pk}/delete/"), "developer")
    assert state() == before


def test_another_tenant_sees_nothing_and_changes_nothing(owner, outsider, app):
    webhook, _ = create(signed_in(owner), app, URL)
    services.deliveries_create(app_id=app.pk, events=[event(app, 1)])
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed")
    client = signed_in(outsider)
    theirs = make_app(outsider, "theirs", regions=("cn-beijing",))
    before = state()
    url = f"{hooks_url(app)}{webhook.pk}/"
    assert_not_found(client.get(hooks_url(app)))
    assert_not_found(post(client, hooks_url(app), {"url": URL + "/evil", "events": "*"}))
    assert_not_found(client.get(url))
    assert_not_found(post(client, url + "active/", {"active": "false"}))
    assert_not_found(post(client, url + "delete/"))
    assert_not_found(post(client, f"{url}deliveries/{delivery.pk}/redeliver/"))
    # Their own app's path with our webhook's id: still not found.
    assert_not_found(client.get(f"/portal/apps/{theirs.pk}/webhooks/{webhook.pk}/"))
    assert_not_found(client.get(f"/portal/apps/{theirs.pk}/webhooks/{uuid.uuid4()}/"))
    assert state() == before


def test_writes_need_the_csrf_token(owner, app):
    client = signed_in(owner)
    webhook, _ = create(client, app, URL)
    before = state()
    url = f"{hooks_url(app)}{webhook.pk}/"
    assert client.post(hooks_url(app), {"url": URL + "/2", "events": "*"}).status_code == 403
    assert client.post(url + "active/", {"active": "false"}).status_code == 403
    assert client.post(url + "delete/").status_code == 403
    assert state() == before


def test_list_and_log_pages_do_not_query_per_row(owner, app):
    client = signed_in(owner)
    webhook, _ = create(client, app, URL)
    height = iter(range(1, 100))

    def add(n: int) -> None:
        for _ in range(n):
            Webhook.objects.create(app=app, url=URL + f"/{uuid.uuid4().hex}", events=["*"], secret_encrypted="x")
        services.deliveries_create(app_id=app.pk, events=[event(app, next(height)) for _ in range(n)])

    add(2)
    few = queries(client, hooks_url(app)), queries(client, f"{hooks_url(app)}{webhook.pk}/")
    add(10)
    assert (queries(client, hooks_url(app)), queries(client, f"{hooks_url(app)}{webhook.pk}/")) == few


def test_sending_the_create_form_again_adds_no_second_webhook(owner, app):
    client = signed_in(owner)
    form_id = assert_page(client.get(hooks_url(app))).split('name="form_id" value="')[1].split('"')[0]
    form = {"url": URL, "events": "*", "form_id": form_id}
    assert "shown only this once" in assert_page(post(client, hooks_url(app), form))
    page = assert_page(post(client, hooks_url(app), form), 409)
    assert "This webhook was already added" in page and "whsec_" not in page
    assert Webhook.objects.filter(app=app).count() == 1

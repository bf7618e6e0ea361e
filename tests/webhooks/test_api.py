"""The webhooks API as a tenant's developer uses it, and as an attacker tries it."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent
from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.models import Framework
from apps.common.crypto import decrypt_secret
from apps.tenants.models import Role
from apps.webhooks.models import Webhook, WebhookDelivery
from tests.api.conftest import assert_problem, make_app
from tests.conftest import _client_for
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/bsn"


@pytest.fixture
def app(owner, regions):
    ensure_builtin_framework(Framework)
    return make_app(owner, "hooked", regions=("cn-beijing",), contract_template="trade_finance")


def base(app) -> str:
    return f"/api/v1/apps/{app.pk}/webhooks"


def test_create_shows_the_secret_once_and_keeps_it_encrypted(app, owner_client):
    resp = owner_client.post(base(app), {"url": URL, "events": ["accepted", "rejected", "accepted"]}, format="json")
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    assert body["events"] == ["accepted", "rejected"]
    assert (body["url"], body["active"], body["app"]) == (URL, True, str(app.pk))
    assert resp["Location"] == f"{base(app)}/{body['id']}"
    row = Webhook.objects.get(pk=body["id"])
    assert body["secret"] not in row.secret_encrypted and decrypt_secret(row.secret_encrypted) == body["secret"]
    shown = owner_client.get(f"{base(app)}/{body['id']}").json()
    assert "secret" not in shown and body["secret"] not in str(owner_client.get(base(app)).content)
    event = AuditEvent.objects.get(action="webhook.create", object_id=body["id"])
    assert event.tenant == app.tenant and body["secret"] not in str(event.data)

    own = owner_client.post(
        base(app), {"url": URL, "events": ["*"], "secret": "my-own-secret-0123456789"}, format="json"
    )
    assert own.json()["secret"] == "my-own-secret-0123456789"


def test_patch_list_and_delete(app, owner_client):
    hook = owner_client.post(base(app), {"url": URL, "events": ["*"]}, format="json").json()
    url = f"{base(app)}/{hook['id']}"
    changed = owner_client.patch(url, {"url": URL + "/v2", "events": ["paid"], "active": False}, format="json")
    assert changed.status_code == 200, changed.content
    assert (changed.json()["url"], changed.json()["events"], changed.json()["active"]) == (URL + "/v2", ["paid"], False)
    assert owner_client.get(base(app), {"active": "false"}).json()["count"] == 1
    assert_problem(owner_client.patch(url, {"secret": "x" * 20}, format="json"), 400)
    assert_problem(owner_client.patch(url, {}, format="json"), 400)
    assert owner_client.delete(url).status_code == 204
    assert_problem(owner_client.get(url), 404, "not-found")
    actions = list(
        AuditEvent.objects.filter(object_id=hook["id"]).order_by("sequence").values_list("action", flat=True)
    )
    assert actions == ["webhook.create", "webhook.update", "webhook.delete"]


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://hooks.example.com/x", "events": ["*"]},
        {"url": "https://user:pw@hooks.example.com/x", "events": ["*"]},
        {"url": "not a url", "events": ["*"]},
        {"url": URL, "events": []},
        {"url": URL, "events": ["bad name!"]},
        {"url": URL, "events": ["x"] * 51},
        {"url": URL, "events": "*"},
        {"url": URL, "events": ["*"], "secret": "short"},
        {"url": URL, "events": ["*"], "active": False, "tenant": "other"},
        {"events": ["*"]},
    ],
)
def test_bad_input_is_a_400_and_nothing_is_written(app, owner_client, body):
    before = AuditEvent.objects.count()
    assert_problem(owner_client.post(base(app), body, format="json"), 400)
    assert not Webhook.objects.exists() and AuditEvent.objects.count() == before


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8000/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://localhost:8000/hook",
    ],
)
def test_private_addresses_are_refused_when_the_setting_is_off(app, owner_client, url, settings):
    settings.BSN_WEBHOOKS_ALLOW_PRIVATE = False
    body = assert_problem(owner_client.post(base(app), {"url": url, "events": ["*"]}, format="json"), 400)
    assert body["code"] == "address-not-allowed"
    assert not Webhook.objects.exists()
    hook = owner_client.post(base(app), {"url": URL, "events": ["*"]}, format="json").json()
    resp = owner_client.patch(f"{base(app)}/{hook['id']}", {"url": url}, format="json")
    assert assert_problem(resp, 400)["code"] == "address-not-allowed"
    assert Webhook.objects.get(pk=hook["id"]).url == URL


def test_roles_viewer_reads_developer_writes(app, owner_client, tenant_a):
    hook = owner_client.post(base(app), {"url": URL, "events": ["*"]}, format="json").json()
    viewer = _client_for(MembershipFactory(tenant=tenant_a, role=Role.VIEWER))
    developer = _client_for(MembershipFactory(tenant=tenant_a, role=Role.DEVELOPER))
    assert viewer.get(base(app)).json()["count"] == 1
    assert_problem(viewer.post(base(app), {"url": URL, "events": ["*"]}, format="json"), 403)
    assert_problem(viewer.patch(f"{base(app)}/{hook['id']}", {"active": False}, format="json"), 403)
    assert_problem(viewer.delete(f"{base(app)}/{hook['id']}"), 403)
    assert developer.post(base(app), {"url": URL, "events": ["*"]}, format="json").status_code == 201


def test_another_tenant_sees_nothing_and_changes_nothing(app, owner_client, outsider_client):
    hook = owner_client.post(base(app), {"url": URL, "events": ["*"]}, format="json").json()
    delivery = WebhookDelivery.objects.create(
        webhook_id=hook["id"], event_key=f"{app.pk}:1:0:0", height=1, tx_index=0, seq=0, event={"name": "issued"}
    )
    theirs = f"{base(app)}/{hook['id']}"
    nowhere = f"/api/v1/apps/{uuid.uuid4()}/webhooks/{uuid.uuid4()}"
    for path in (theirs, f"{theirs}/deliveries", f"{theirs}/deliveries/{delivery.pk}"):
        assert_problem(outsider_client.get(path), 404, "not-found")
    assert_problem(outsider_client.post(f"{theirs}/deliveries/{delivery.pk}/redeliver"), 404, "not-found")
    assert_problem(outsider_client.patch(theirs, {"url": "https://evil.example.com"}, format="json"), 404)
    assert_problem(outsider_client.delete(theirs), 404)
    assert_problem(outsider_client.post(base(app), {"url": URL, "events": ["*"]}, format="json"), 404)
    assert_problem(outsider_client.get(nowhere), 404, "not-found")
    assert Webhook.objects.get(pk=hook["id"]).url == URL and Webhook.objects.count() == 1
    assert_problem(owner_client.get(f"{base(app)}/not-a-uuid"), 404, "not-found")
    assert_problem(owner_client.get(f"{theirs}/deliveries/not-a-uuid"), 404, "not-found")


def test_list_queries_do_not_grow_with_rows(app, owner_client):
    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert owner_client.get(base(app)).status_code == 200
        return len(ctx.captured_queries)

    owner_client.post(base(app), {"url": URL, "events": ["*"]}, format="json")
    one = count()
    for n in range(5):
        owner_client.post(base(app), {"url": f"{URL}/{n}", "events": ["*"]}, format="json")
    assert count() == one


def test_delivery_log_queries_do_not_grow_with_rows(app, owner_client):
    hook = owner_client.post(base(app), {"url": URL, "events": ["*"]}, format="json").json()
    url = f"{base(app)}/{hook['id']}/deliveries"

    def add(n: int) -> None:
        WebhookDelivery.objects.create(
            webhook_id=hook["id"], event_key=f"k{n}", height=n, tx_index=0, seq=0, event={"name": "issued"}
        )

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert owner_client.get(url).status_code == 200
        return len(ctx.captured_queries)

    add(1)
    one = count()
    for n in range(2, 8):
        add(n)
    assert count() == one
    assert [d["height"] for d in owner_client.get(url).json()["results"]] == list(range(7, 0, -1))
    assert owner_client.get(url, {"status": "succeeded"}).json()["count"] == 0


def test_the_log_keeps_finished_deliveries_30_days_and_pending_ones_until_they_finish(app, owner_client):
    from datetime import timedelta

    from django.utils import timezone

    from apps.webhooks.services import deliveries_purge

    hook = owner_client.post(base(app), {"url": URL, "events": ["*"]}, format="json").json()
    now = timezone.now()

    def add(n: int, status: str, finished_days_ago: float | None) -> WebhookDelivery:
        finished = None if finished_days_ago is None else now - timedelta(days=finished_days_ago)
        return WebhookDelivery.objects.create(
            webhook_id=hook["id"],
            event_key=f"k{n}",
            height=n,
            tx_index=0,
            seq=0,
            event={"name": "issued"},
            status=status,
            finished_at=finished,
        )

    old_ok, old_failed = add(1, "succeeded", 31), add(2, "failed", 40)
    recent, pending = add(3, "succeeded", 29), add(4, "pending", None)
    assert deliveries_purge(now=now) == 2
    left = set(WebhookDelivery.objects.values_list("pk", flat=True))
    assert left == {recent.pk, pending.pk} and not {old_ok.pk, old_failed.pk} & left

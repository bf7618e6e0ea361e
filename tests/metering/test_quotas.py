"""Storage and daily-volume quotas at the gateway (issue 10): refused with a clear code before
anything reaches a node, nothing counted, shown with current use, changed by staff only."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.chainapps.models import ChainApp
from apps.gateway import ratelimit
from apps.metering import counters, services
from apps.metering.models import NodeMeter
from apps.tenants.models import Tenant
from bsn.client import Client
from tests.api.conftest import assert_problem
from tests.conftest import redis_url  # noqa: F401 - the fixture: Redis must answer (fails under CI)
from tests.factories import UserFactory

MIB = 1024 * 1024


def url(app, path: str = "") -> str:
    return f"/api/v1/apps/{app.pk}/{path}"


@pytest.fixture
def signer(app, alice_key) -> Client:
    return Client("http://unused", "-", str(app.pk), "alice", alice_key[0])


def stored(app, nbytes: int) -> None:
    """The node of ``app`` reported ``nbytes`` at the last scrape."""
    NodeMeter.objects.update_or_create(
        node=app.nodes.get(),
        defaults={"observed_at": timezone.now(), "running": True, "storage_bytes": nbytes},
    )


def tps_tokens(app) -> float:
    return ratelimit.store().peek([ratelimit.Bucket(f"app:{app.pk}", app.tps_quota, app.tps_quota)])[0]


def test_a_full_app_is_refused_403_before_its_node_and_nothing_is_taken(
    owner_client,
    app,
    sim,
    alice,
    signer,
    redis_url,  # noqa: F811
):
    ChainApp.objects.filter(pk=app.pk).update(storage_mb=1)
    app.refresh_from_db()
    envelope = signer.sign("kv", "put", {"key": "k", "value": "v"})
    stored(app, MIB - 10)  # fewer bytes left than this envelope holds
    blocks, volume = len(sim.blocks), services_volume(app)
    tokens = tps_tokens(app)
    body = assert_problem(
        owner_client.post(url(app, "transactions"), envelope, format="json"), 403, "storage-quota-exceeded"
    )
    assert body["storage_mb"] == 1 and body["storage_in_use_bytes"] == MIB - 10 and "1 MiB" in body["detail"]
    assert len(sim.blocks) == blocks  # nothing reached the node
    assert services_volume(app) == volume  # the day's volume did not move
    assert tps_tokens(app) >= tokens  # no TPS token taken (it may only have refilled)
    detail = owner_client.get(url(app)).json()
    assert (detail["storage_mb"], detail["storage_in_use_bytes"]) == (1, MIB - 10)
    assert owner_client.get("/api/v1/tenant").json()["usage"]["storage_in_use_bytes"] == MIB - 10
    stored(app, 1000)  # room again (e.g. staff raised the quota, or a smaller reading)
    resp = owner_client.post(url(app, "transactions"), envelope, format="json")
    assert resp.status_code == 200 and resp.json()["status"] == "committed", resp.content
    services.counters_flush()
    assert app.usage_hours.get().tx_committed == 1  # the refused one was never counted


def services_volume(app) -> int:
    return counters.store().volume_used(str(app.tenant_id), timezone.now())


def test_the_daily_volume_is_429_until_midnight_utc_and_a_refusal_adds_nothing(
    owner_client,
    app,
    sim,
    alice,
    signer,
    redis_url,  # noqa: F811
):
    Tenant.objects.filter(pk=app.tenant_id).update(max_daily_volume_mb=1)
    first = owner_client.post(
        url(app, "transactions"), signer.sign("kv", "put", {"key": "a", "value": 1}), format="json"
    )
    assert first.status_code == 200
    size = int(first.wsgi_request.META["CONTENT_LENGTH"])
    assert services_volume(app) == size
    # Another process of the platform spent the rest of the day's MiB but 10 bytes.
    ok, _ = counters.store().volume_take(str(app.tenant_id), MIB - size - 10, MIB, timezone.now())
    assert ok
    blocks = len(sim.blocks)
    resp = owner_client.post(
        url(app, "transactions"), signer.sign("kv", "put", {"key": "b", "value": 2}), format="json"
    )
    body = assert_problem(resp, 429, "daily-volume-exceeded")
    now = timezone.now()
    to_midnight = (24 - now.hour) * 3600 - now.minute * 60 - now.second
    assert abs(int(resp["Retry-After"]) - to_midnight) <= 2
    assert body["max_daily_volume_mb"] == 1 and body["volume_today_bytes"] == MIB - 10
    assert len(sim.blocks) == blocks and services_volume(app) == MIB - 10
    tenant = owner_client.get("/api/v1/tenant").json()
    assert tenant["quotas"]["max_daily_volume_mb"] == 1 and tenant["usage"]["volume_today_bytes"] == MIB - 10
    # A batch is one request: its bytes count together.
    batch = {"txs": [signer.sign("kv", "put", {"key": "c", "value": 3})]}
    assert_problem(owner_client.post(url(app, "transactions"), batch, format="json"), 429, "daily-volume-exceeded")


def test_a_tps_refusal_gives_the_volume_back(owner_client, app, sim, alice, signer, redis_url):  # noqa: F811
    ChainApp.objects.filter(pk=app.pk).update(tps_quota=1)
    assert (
        owner_client.post(
            url(app, "transactions"), signer.sign("kv", "put", {"key": "a", "value": 1}), format="json"
        ).status_code
        == 200
    )
    before = services_volume(app)
    resp = owner_client.post(
        url(app, "transactions"), signer.sign("kv", "put", {"key": "a", "value": 2}), format="json"
    )
    assert_problem(resp, 429, "tps-quota-exceeded")
    assert services_volume(app) == before


def test_storage_quota_is_set_by_staff_within_the_tenant_and_audited(owner_client, owner, app):
    assert_problem(owner_client.patch(url(app), {"storage_mb": 5000}, format="json"), 403, "staff-only")
    owner.user.is_staff = True  # as the TPS quota test does: a platform operator's account
    owner.user.save(update_fields=["is_staff"])
    over = assert_problem(owner_client.patch(url(app), {"storage_mb": 20_000}, format="json"), 409, "quota-exceeded")
    assert "max_storage_mb" in over["detail"]
    resp = owner_client.patch(url(app), {"storage_mb": 2048}, format="json")
    assert resp.status_code == 200 and resp.json()["storage_mb"] == 2048
    event = AuditEvent.objects.filter(action="app.update", object_id=str(app.pk)).latest("sequence")
    assert event.data["storage_mb"] == 2048 and event.data["storage_mb_before"] == 1024
    assert ChainApp.objects.get(pk=app.pk).storage_mb == 2048


def test_daily_volume_is_set_with_the_command_and_in_the_admin_and_audited(app, db):
    out = StringIO()
    call_command("bsn_tenant", "quota", app.tenant.slug, "--max-daily-volume-mb", "7", stdout=out)
    assert "daily volume 7 MB" in out.getvalue()
    event = AuditEvent.objects.filter(action="tenant.quota").latest("sequence")
    assert event.data["max_daily_volume_mb"] == 7 and event.data["before"] == {"max_daily_volume_mb": 1024}

    from django.test import Client as DjangoClient

    operator = UserFactory(is_staff=True, is_superuser=True)
    browser = DjangoClient()
    browser.force_login(operator)
    tenant = Tenant.objects.get(pk=app.tenant_id)
    form = {
        "slug": tenant.slug,
        "name": tenant.name,
        "kind": tenant.kind,
        "is_active": "on",
        "max_apps": tenant.max_apps,
        "max_nodes": tenant.max_nodes,
        "max_tps": tenant.max_tps,
        "max_storage_mb": tenant.max_storage_mb,
        "max_daily_volume_mb": 9,
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    resp = browser.post(f"/admin/tenants/tenant/{tenant.pk}/change/", form)
    assert resp.status_code == 302, resp.content[:2000]
    assert Tenant.objects.get(pk=tenant.pk).max_daily_volume_mb == 9
    event = AuditEvent.objects.filter(action="tenant.quota").latest("sequence")
    assert event.actor_label == operator.username
    assert event.data["max_daily_volume_mb"] == 9 and event.data["before"] == {"max_daily_volume_mb": 7}


def test_tenant_quotas_are_set_through_the_api_by_staff_only_and_audited(owner_client, owner, app):
    body = assert_problem(
        owner_client.patch("/api/v1/tenant", {"max_daily_volume_mb": 99999}, format="json"), 403, "staff-only"
    )
    assert "platform staff" in body["detail"]
    assert Tenant.objects.get(pk=owner.tenant_id).max_daily_volume_mb == 1024
    assert_problem(owner_client.patch("/api/v1/tenant", {"slug": "x"}, format="json"), 400)
    assert owner_client.patch("/api/v1/tenant", {}, format="json").status_code == 200  # nothing to change
    owner.user.is_staff = True
    owner.user.save(update_fields=["is_staff"])
    assert_problem(owner_client.patch("/api/v1/tenant", {"max_daily_volume_mb": -1}, format="json"), 400)
    resp = owner_client.patch("/api/v1/tenant", {"max_daily_volume_mb": 5, "max_tps": 50}, format="json")
    assert resp.status_code == 200 and resp.json()["quotas"]["max_daily_volume_mb"] == 5
    assert resp.json()["quotas"]["max_tps"] == 50
    event = AuditEvent.objects.filter(action="tenant.quota").latest("sequence")
    assert event.data == {
        "max_daily_volume_mb": 5,
        "max_tps": 50,
        "before": {"max_daily_volume_mb": 1024, "max_tps": 100},
    }
    assert event.actor_label == owner.user.username

"""The usage API (GET /apps/{id}/usage, GET /tenant/usage) and the platform's /metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client as DjangoClient
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from apps.chainapps.models import ChainApp
from apps.metering.models import NodeMeter, UsageHour
from apps.regions.models import Region
from tests.api.conftest import assert_problem, make_app
from tests.factories import UserFactory

T0 = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)


def hour(n: int) -> datetime:
    return T0 + timedelta(hours=n)


@pytest.fixture
def metered(owner, regions):
    """Tenant A's app on two regions with four metered hours around midnight, and a second app."""
    app = make_app(owner, "billed", regions=("cn-beijing", "cn-shanghai"))
    other = make_app(owner, "other")
    bj, sh = Region.objects.get(code="cn-beijing"), Region.objects.get(code="cn-shanghai")
    rows = [
        (
            app,
            bj,
            0,
            dict(tx_committed=10, tx_failed=1, bytes_in=1000, bytes_out=2000, node_seconds=3600, storage_bytes=500),
        ),
        (app, sh, 0, dict(tx_committed=5, tx_rejected=2, bytes_in=10, node_seconds=3600, storage_bytes=400)),
        (app, bj, 1, dict(tx_committed=1, node_seconds=1800, storage_bytes=800)),
        (app, bj, 2, dict(tx_committed=7, bytes_out=70, node_seconds=3600, storage_bytes=600)),
        (other, bj, 2, dict(tx_committed=100, storage_bytes=50)),
    ]
    for a, region, n, values in rows:
        UsageHour.objects.create(app=a, region=region, hour=hour(n), **values)
    return app, other


def get(client, path, **params):
    return client.get(path, params)


def test_app_usage_per_hour_lists_every_bucket_with_totals(owner_client, metered):
    app, _ = metered
    resp = get(
        owner_client, f"/api/v1/apps/{app.pk}/usage", **{"from": "2026-11-30T22:00:00Z", "to": "2026-12-01T02:00:00Z"}
    )
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert (body["from"], body["to"], body["step"]) == ("2026-11-30T22:00:00Z", "2026-12-01T02:00:00Z", "hour")
    assert [b["start"] for b in body["buckets"]] == [
        "2026-11-30T22:00:00Z",
        "2026-11-30T23:00:00Z",
        "2026-12-01T00:00:00Z",
        "2026-12-01T01:00:00Z",
    ]
    first = body["buckets"][0]
    assert (first["tx_committed"], first["tx_failed"], first["tx_rejected"]) == (15, 1, 2)
    assert (first["bytes_in"], first["bytes_out"], first["node_seconds"], first["storage_bytes"]) == (
        1010,
        2000,
        7200,
        900,
    )
    assert body["buckets"][3]["tx_committed"] == 0  # empty hours are listed too
    totals = body["totals"]
    assert (totals["tx_committed"], totals["node_seconds"], totals["storage_bytes"]) == (23, 12600, 900)


def test_app_usage_per_day_rounds_the_range_out_to_whole_days(owner_client, metered):
    app, _ = metered
    resp = get(
        owner_client,
        f"/api/v1/apps/{app.pk}/usage",
        **{"from": "2026-11-30T23:30:00", "to": "2026-12-01T00:30:00+00:00", "step": "day"},
    )
    body = resp.json()
    assert (body["from"], body["to"]) == ("2026-11-30T00:00:00Z", "2026-12-02T00:00:00Z")
    assert [(b["start"][:10], b["tx_committed"], b["storage_bytes"]) for b in body["buckets"]] == [
        ("2026-11-30", 16, 900),
        ("2026-12-01", 7, 600),
    ]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"step": "minute"}, "step"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-12-01T00:00:00Z", "to": "2026-11-30T00:00:00Z"}, "from"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from"),  # 1416 hours > 744
        ({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "step": "day"}, "from"),
        ({"app": "x"}, "app"),
    ],
)
def test_bad_ranges_are_400_naming_the_parameter(owner_client, metered, params, field):
    app, _ = metered
    body = assert_problem(get(owner_client, f"/api/v1/apps/{app.pk}/usage", **params), 400)
    assert field in body["errors"], body


def test_tenant_usage_is_per_app_with_totals_and_never_shows_another_tenant(owner_client, outsider_client, metered):
    app, _ = metered
    params = {"from": "2026-11-30T00:00:00Z", "to": "2026-12-02T00:00:00Z", "step": "day"}
    body = get(owner_client, "/api/v1/tenant/usage", **params).json()
    rows = {row["name"]: row for row in body["apps"]}
    assert set(rows) == {"billed", "other"}
    assert (rows["billed"]["tx_committed"], rows["billed"]["storage_bytes"]) == (23, 900)
    assert (rows["other"]["tx_committed"], rows["other"]["storage_bytes"]) == (100, 50)
    assert body["totals"]["tx_committed"] == 123 and body["totals"]["storage_bytes"] == 950
    theirs = get(outsider_client, "/api/v1/tenant/usage", **params).json()
    assert theirs["apps"] == [] and theirs["totals"]["tx_committed"] == 0
    assert_problem(get(outsider_client, f"/api/v1/apps/{app.pk}/usage"), 404, "not-found")


def test_a_deleted_app_with_usage_in_the_range_stays_on_the_tenant_usage(owner_client, metered):
    app, _ = metered
    ChainApp.objects.filter(pk=app.pk).update(deleted_at=hour(3), desired_state="deleted")
    body = get(
        owner_client, "/api/v1/tenant/usage", **{"from": "2026-11-30T00:00:00Z", "to": "2026-12-02T00:00:00Z"}
    ).json()
    assert {(row["name"], row["deleted"]) for row in body["apps"]} == {("billed", True), ("other", False)}


def test_metrics_are_for_staff_or_the_scrape_token(owner, metered):
    app, _ = metered
    NodeMeter.objects.create(node=app.nodes.get(region__code="cn-beijing"), observed_at=hour(3), storage_bytes=4321)
    anonymous = DjangoClient()
    assert anonymous.get("/metrics").status_code == 401
    with override_settings(BSN_METRICS_TOKEN="s3cret-scrape-token"):
        assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        resp = anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(resp.content.decode())
        for sample in family.samples
    }
    labels = {"tenant": "acme", "app": str(app.pk), "app_name": "billed", "region": "cn-beijing"}

    def value(name, **more):
        return samples[(name, tuple(sorted({**labels, **more}.items())))]

    assert value("bsn_app_transactions_total", status="committed") == 18
    assert value("bsn_app_transactions_total", status="failed") == 1
    assert value("bsn_app_gateway_bytes_total", direction="out") == 2070
    assert value("bsn_app_node_seconds_total") == 9000
    assert value("bsn_app_storage_bytes") == 4321
    member = DjangoClient()
    member.force_login(owner.user)  # a tenant's own login is not the platform's
    assert member.get("/metrics").status_code == 401
    staff = DjangoClient()
    staff.force_login(UserFactory(is_staff=True))
    assert staff.get("/metrics").status_code == 200


def test_the_operator_reads_usage_and_node_meters_in_the_admin_and_cannot_edit_them(metered):
    app, _ = metered
    NodeMeter.objects.create(node=app.nodes.get(region__code="cn-beijing"), observed_at=hour(3), storage_bytes=4321)
    operator = DjangoClient()
    operator.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = operator.get("/admin/metering/usagehour/")
    assert page.status_code == 200 and b"billed" in page.content
    assert operator.get("/admin/metering/nodemeter/").status_code == 200
    row = UsageHour.objects.filter(app=app).first()
    assert operator.post(f"/admin/metering/usagehour/{row.pk}/change/", {"tx_committed": 0}).status_code == 403
    assert operator.get("/admin/metering/usagehour/add/").status_code == 403

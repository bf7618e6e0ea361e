"""The billing API as tenants, staff and attackers use it: prices (staff write, everyone reads),
a month close run by staff, invoices scoped to their tenant (another tenant's is a 404)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.billing import tasks
from apps.billing.models import Invoice, PriceList
from apps.tenants.models import Role, Tenant
from tests.api.conftest import assert_problem, finish_open_operations, make_app
from tests.billing.conftest import CLOSE_AT, iso
from tests.billing.factories import UsageHourFactory
from tests.billing.test_flow import metered
from tests.conftest import _client_for
from tests.factories import MembershipFactory, RegionFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/billing/prices"


def next_hour() -> dt.datetime:
    return timezone.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)


def body(**over) -> dict:
    return {
        "region": "cn-hangzhou",
        "valid_from": next_hour().isoformat(),
        "node_hour_fen": 35,
        "per_1000_tx_fen": 12,
        "gb_month_fen": 80,
        "operator_share_bp": 2500,
        **over,
    }


@pytest.fixture
def hangzhou(db):
    return RegionFactory(code="cn-hangzhou")


@pytest.fixture
def staff_client(db):
    platform = TenantFactory(slug="platform-ops", kind=Tenant.Kind.PLATFORM)
    return _client_for(MembershipFactory(tenant=platform, role=Role.ADMIN))


def test_staff_set_prices_and_everyone_reads_them(hangzhou, staff_client, owner_client):
    resp = staff_client.post(URL, body(), format="json")
    assert resp.status_code == 201, resp.content
    created = resp.json()
    assert (created["region"], created["node_hour_fen"], created["operator_share_bp"]) == ("cn-hangzhou", 35, 2500)
    assert AuditEvent.objects.filter(action="billing.price.set", object_id=str(created["id"])).count() == 1
    listed = owner_client.get(URL, {"region__code": "cn-hangzhou"}).json()
    assert [p["id"] for p in listed["results"]] == [created["id"]]
    # Django staff (the operator's admin login) may too.
    django_staff = MembershipFactory(user=UserFactory(username="ops", is_staff=True))
    later = body(valid_from=(next_hour() + dt.timedelta(days=30)).isoformat())
    assert _client_for(django_staff).post(URL, later, format="json").status_code == 201


def test_non_staff_cannot_set_prices_or_close_a_month(hangzhou, owner_client, client_with_role):
    platform_viewer = _client_for(
        MembershipFactory(tenant=TenantFactory(slug="plat", kind=Tenant.Kind.PLATFORM), role=Role.VIEWER)
    )
    for client in (owner_client, client_with_role(Role.ADMIN), platform_viewer):
        assert_problem(client.post(URL, body(), format="json"), 403)
        assert_problem(client.post("/api/v1/billing/months/close", {"month": "2026-10"}, format="json"), 403)
    assert not PriceList.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="billing.").exists()


@pytest.mark.parametrize(
    ("over", "status", "code"),
    [
        ({"node_hour_fen": 1.5}, 400, "invalid"),
        ({"node_hour_fen": "35"}, 400, "invalid"),
        ({"gb_month_fen": True}, 400, "invalid"),
        ({"per_1000_tx_fen": -1}, 400, "invalid"),
        ({"operator_share_bp": 10_001}, 400, "invalid"),
        ({"currency": "USD"}, 400, "invalid"),
        ({"region": "nowhere"}, 404, "not-found"),
        ({"valid_from": "2020-01-01T00:00:00Z"}, 409, "price-in-past"),
        ({"valid_from": "2099-01-01T00:30:00Z"}, 400, "invalid"),
        ({"valid_from": "0001-01-01T00:00:00+14:00"}, 400, "invalid"),
        ({"valid_from": "9999-12-31T23:00:00-14:00"}, 400, "invalid"),
        ({"valid_from": "2099-01-01T00:00:00"}, 201, None),  # no zone: UTC (USE_TZ)
    ],
)
def test_bad_prices_are_refused_and_change_nothing(hangzhou, staff_client, over, status, code):
    resp = staff_client.post(URL, body(**over), format="json")
    if status == 201:
        assert resp.status_code == 201, resp.content
        return
    assert_problem(resp, status, code)
    assert not PriceList.objects.exists()


def test_a_second_price_for_the_same_hour_is_a_conflict(hangzhou, staff_client):
    same = body()
    assert staff_client.post(URL, same, format="json").status_code == 201
    assert_problem(staff_client.post(URL, same, format="json"), 409, "price-exists")
    assert PriceList.objects.count() == 1


def test_staff_close_a_month_once(prices, corp, home_region, shanghai, staff_client):
    metered(corp, home_region, shanghai)
    assert_problem(staff_client.post("/api/v1/billing/months/close", {"month": "2999-01"}, format="json"), 409)
    first = staff_client.post("/api/v1/billing/months/close", {"month": "2026-10"}, format="json")
    assert first.status_code == 200 and first.json()["created"] == ["BSN-202610-acme-corp"]
    again = staff_client.post("/api/v1/billing/months/close", {"month": "2026-10"}, format="json").json()
    assert again["created"] == [] and again["existing"] == ["BSN-202610-acme-corp"]
    assert Invoice.objects.count() == 1
    for month in ("2026-13", "0000-01", "9999-12", "2026-1", 202610):
        assert_problem(staff_client.post("/api/v1/billing/months/close", {"month": month}, format="json"), 400)


def test_another_tenants_invoice_is_a_404_like_a_missing_one(prices, corp, home_region, shanghai, tenant_b):
    metered(corp, home_region, shanghai)
    other_owner = MembershipFactory(tenant=tenant_b, role=Role.OWNER)
    other_app = make_app(other_owner, "theirs", regions=("cn-beijing",))
    finish_open_operations(other_app.pk)
    UsageHourFactory(app=other_app, region=home_region, hour=dt.datetime(2026, 10, 5, tzinfo=dt.UTC))
    tasks.month_close(now=iso(CLOSE_AT))
    theirs = Invoice.objects.get(tenant=corp["tenant"])
    outsider = _client_for(other_owner)
    listed = outsider.get("/api/v1/tenant/invoices").json()
    assert [i["number"] for i in listed["results"]] == ["BSN-202610-globex"]
    assert "acme-corp" not in str(listed)
    for suffix in ("", "/html"):
        a = assert_problem(outsider.get(f"/api/v1/tenant/invoices/{theirs.pk}{suffix}"), 404, "not-found")
        b = assert_problem(outsider.get(f"/api/v1/tenant/invoices/{uuid.uuid4()}{suffix}"), 404, "not-found")
        assert {k: v for k, v in a.items() if k != "instance"} == {k: v for k, v in b.items() if k != "instance"}
    # Writes do not exist on invoices.
    assert outsider.delete(f"/api/v1/tenant/invoices/{theirs.pk}").status_code == 405
    assert Invoice.objects.get(pk=theirs.pk).status == "issued"


def test_the_tenant_sees_its_billing_and_chooses_its_paying_wallet(bank, prices, corp, home_region, shanghai):
    from apps.dcep.models import Account

    metered(corp, home_region, shanghai)
    tasks.month_close(now=iso(CLOSE_AT))
    second = Account.objects.create(
        kind="wallet", operator=Account.objects.get(number=bank["corporate"]).operator, number="8000000000000018",
        holder_name="Acme 2", holder_tenant=corp["tenant"], wallet_kind="corporate", tier=1,
    )  # fmt: skip
    admin = corp["admin"]
    status = admin.get("/api/v1/tenant/billing").json()
    # Two corporate wallets and none chosen: nothing pays until the owner says which.
    assert status == {
        "wallet": None,
        "wallet_chosen": False,
        "unpaid": 1,
        "unpaid_fen": Invoice.objects.get().total_fen,
        "next_due_at": status["next_due_at"],
        "suspended": None,
    }
    assert_problem(admin.put("/api/v1/tenant/billing", {"wallet": second.number}, format="json"), 403)
    owner = _client_for(corp["owner"])
    chosen = owner.put("/api/v1/tenant/billing", {"wallet": second.number}, format="json")
    assert chosen.status_code == 200 and chosen.json()["wallet"] == second.number
    assert AuditEvent.objects.filter(action="billing.wallet.set", tenant=corp["tenant"]).count() == 1
    # The platform's wallet (someone else's) is refused exactly like a number that does not exist.
    theirs = assert_problem(owner.put("/api/v1/tenant/billing", {"wallet": bank["revenue"]}, format="json"), 404)
    nowhere = assert_problem(owner.put("/api/v1/tenant/billing", {"wallet": "8000000000000026"}, format="json"), 404)
    assert theirs["detail"].replace(bank["revenue"], "N") == nowhere["detail"].replace("8000000000000026", "N")
    assert_problem(owner.put("/api/v1/tenant/billing", {"wallet": 8000000000000018}, format="json"), 400)
    assert_problem(owner.put("/api/v1/tenant/billing", {"wallet": "1", "extra": 1}, format="json"), 400)
    assert admin.get("/api/v1/tenant/billing").json()["wallet"] == second.number
    assert_problem(corp["viewer"].get("/api/v1/tenant/billing"), 403)

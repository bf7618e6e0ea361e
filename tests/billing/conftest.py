"""Billing fixtures: DCEP with a real tier-1 node (tests/dcep), the platform's revenue wallet, an
enterprise with a corporate wallet and chain apps, region prices and a month of usage."""

from __future__ import annotations

import datetime as dt

import pytest

from apps.billing.services import price_set
from apps.regions.models import Region
from apps.tenants.models import Role, Tenant
from tests.api.conftest import finish_open_operations, make_app
from tests.conftest import _client_for
from tests.dcep.conftest import Client, enterprise, home_region, institutions, tier1  # noqa: F401 - fixtures
from tests.dcep.helpers import created, issue, open_wallet
from tests.factories import MembershipFactory, RegionFactory

OCT = dt.date(2026, 10, 1)
T = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)  # the start of the billed month
PRICE_CHANGE = dt.datetime(2026, 10, 16, tzinfo=dt.UTC)
CLOSE_AT = dt.datetime(2026, 11, 1, 7, tzinfo=dt.UTC)  # past BSN_BILLING_CLOSE_AFTER_HOURS (6)


def iso(when: dt.datetime) -> str:
    return when.isoformat()


@pytest.fixture
def shanghai(db):
    return RegionFactory(code="cn-shanghai", name="Shanghai", driver=Region.Driver.PROCESS, operator="China Unicom")


@pytest.fixture
def prices(home_region, shanghai):  # noqa: F811 - the fixture imported above
    """Beijing: 30 fen a node-hour, 50 per 1k tx, 100 per GB-month, 30 % to the operator; from the
    16th 40 / 60 / 100. Shanghai: 20 / 10 / 3 with 15.5 %."""
    Region.objects.filter(pk=home_region.pk).update(operator="China Mobile")
    before = T - dt.timedelta(days=1)
    first = dict(node_hour_fen=30, per_1000_tx_fen=50, gb_month_fen=100, operator_share_bp=3000)
    price_set(region_code="cn-beijing", valid_from=T, now=before, **first)
    later = dict(node_hour_fen=40, per_1000_tx_fen=60, gb_month_fen=100, operator_share_bp=3000)
    price_set(region_code="cn-beijing", valid_from=PRICE_CHANGE, now=before, **later)
    sh = dict(node_hour_fen=20, per_1000_tx_fen=10, gb_month_fen=3, operator_share_bp=1550)
    price_set(region_code="cn-shanghai", valid_from=T, now=before, **sh)


@pytest.fixture
def bank(tier1, institutions, enterprise, shanghai):  # noqa: F811
    """Money: bank-a runs the platform's revenue wallet, bank-b the enterprise's corporate wallet."""
    cb, a, b = institutions
    platform = Tenant.objects.create(slug="bsn-platform", name="BSN Platform", kind=Tenant.Kind.PLATFORM)
    clients = {
        "cb": Client(MembershipFactory(tenant=cb.tenant)),
        "a": Client(MembershipFactory(tenant=a.tenant)),
        "b": Client(MembershipFactory(tenant=b.tenant)),
    }
    issue(clients["cb"], "bank-a", 1_000_000)
    issue(clients["cb"], "bank-b", 50_000_000)
    revenue = open_wallet(clients["a"], tier=1, kind="corporate", holder_tenant=platform.slug, name="BSN revenue")
    corporate = open_wallet(clients["b"], tier=1, kind="corporate", holder_tenant=enterprise.slug, name="Acme Corp")
    return {**clients, "platform": platform, "revenue": revenue, "corporate": corporate}


def fund(bank, amount: int) -> None:
    created(bank["b"].post("exchanges", {"wallet": bank["corporate"], "amount": amount}))


@pytest.fixture
def corp(enterprise, home_region, shanghai):  # noqa: F811
    """The enterprise's owner, admin and viewer clients, and three apps (all provisioned)."""
    owner = MembershipFactory(tenant=enterprise, role=Role.OWNER, user__username="corp-owner")
    apps = {
        "ledger": make_app(owner, "ledger", regions=("cn-beijing",)),
        "notary": make_app(owner, "notary", regions=("cn-shanghai",)),
        "idle": make_app(owner, "idle", regions=("cn-beijing",)),
    }
    for app in apps.values():
        finish_open_operations(app.pk)
    return {
        "owner": owner,
        "admin": _client_for(MembershipFactory(tenant=enterprise, role=Role.ADMIN)),
        "viewer": _client_for(MembershipFactory(tenant=enterprise, role=Role.VIEWER)),
        "developer": _client_for(MembershipFactory(tenant=enterprise, role=Role.DEVELOPER)),
        "apps": apps,
        "tenant": enterprise,
    }

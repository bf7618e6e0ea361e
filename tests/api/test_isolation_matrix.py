"""Tenant isolation: walk every operation of the OpenAPI schema as tenant B's owner against tenant A.

Every route must be classified below. A route the table does not know fails the test, so
nobody adds an endpoint without deciding how it is scoped.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from django.db.models import Q
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.test import APIClient

from apps.audit.api import AuditEventViewSet
from apps.audit.models import AuditEvent
from apps.billing.api.views import BillingView, InvoiceViewSet, MonthCloseView, PriceViewSet
from apps.billing.models import BillingAccount, Invoice, PriceList
from apps.chainapps.api.views import AppViewSet, FrameworkViewSet, OperationViewSet
from apps.chainapps.models import ChainApp, LedgerNode, Operation
from apps.common.api.index import api_index
from apps.custody.models import CustodyKey, TenantDataKey
from apps.dcep import tier1
from apps.dcep.api.ledger import ChainView, InstitutionViewSet, SettlementViewSet, SupplyView, TransferViewSet
from apps.dcep.api.money import (
    ExchangeViewSet,
    HoldViewSet,
    IssuanceViewSet,
    PaymentViewSet,
    RedemptionViewSet,
    WithdrawalViewSet,
)
from apps.dcep.api.wallets import WalletViewSet
from apps.dcep.institutions import institution_ensure, tier1_provision
from apps.dcep.models import Account, Hold, Institution, Tier1Op, Transfer
from apps.dcep.settlement import settlement_run, settlement_start
from apps.dcep.tiers import new_wallet_number
from apps.gateway.api.views import AppLedgerViewSet, AppUserViewSet
from apps.gateway.models import AppUser
from apps.metering import counters
from apps.metering.api.views import AppUsageViewSet, TenantUsageView
from apps.metering.models import UsageHour
from apps.regions.api.views import RegionViewSet
from apps.regions.models import Region
from apps.tenants.api.views import LoginView, LogoutView, MemberViewSet, TenantView, TokenViewSet
from apps.tenants.models import ApiToken, Membership, Tenant
from apps.tenants.services import token_issue
from apps.webhooks.api.views import DeliveryViewSet, WebhookViewSet
from apps.webhooks.models import Webhook, WebhookDelivery
from apps.webhooks.services import webhook_create
from bsn.client import generate_key
from tests.api.conftest import assert_problem, make_app
from tests.dcep.conftest import Client as DcepClient
from tests.dcep.conftest import start_tier1_node
from tests.dcep.helpers import created, funded_wallet, issue, open_wallet, operator_snapshot
from tests.factories import MembershipFactory, custody_user
from tests.fakenode import FakeNode

# kind, resource. Kinds:
#   catalogue  platform-wide (regions, frameworks): readable by every tenant, writable by none
#   login      anonymous; issues a token for the caller's own membership
#   self       acts on the caller's own token / tenant
#   list       tenant-scoped collection: must contain none of A's objects
#   create     tenant-scoped create: the new object is the caller's tenant's
#   object     one tenant-scoped object: A's id must be a 404 indistinguishable from a random id
#              (``{id}`` or ``{app_id}`` is the object; other path parameters get valid values)
#   app-child  an object under an app (``{app_id}`` + ``{id}``): A's object is a 404 under A's
#              app, under B's own app and under a random app, all indistinguishable
# DCEP (docs/dcep.md, "Who sees what"); walked by B (an operator bank) and by an enterprise
# that holds a corporate wallet at bank A:
#   dcep-central     the central bank's (and platform staff's) only: 403 not-allowed, the same
#                    whether the body names bank A or no bank at all
#   dcep-settlement  batches: every operator sees them (they carry only slugs and sums, none of
#                    A's wallets, transfers or holds); an enterprise sees none (A's is a 404)
#   dcep-list        only the walker's own rows: none of A's, not even when a filter names them
#   dcep-open        opening a wallet: the operator's own new wallet; an enterprise is refused
#   dcep-create      a POST naming one of A's wallets in its body: refused exactly as a random
#                    (valid) wallet number is, also when replayed under A's Idempotency-Key
#   self-wallet      the caller's own billing wallet: naming a wallet of anyone else (A's) is a 404 the same as a
#                    wallet that does not exist, and sets nothing
#   staff            platform staff only (billing prices, month close): 403 staff-only for any tenant, nothing written
#   dcep-object      one of A's wallets/holds/transfers (every one of them): a 404
#                    indistinguishable from a random id (a fresh valid wallet number or uuid)
ROUTES: dict[tuple[str, str], tuple[str, str | None]] = {
    ("post", "/api/v1/auth/login"): ("login", None),
    ("post", "/api/v1/auth/logout"): ("self", None),
    ("get", "/api/v1/tenant"): ("self", None),
    ("patch", "/api/v1/tenant"): ("self", None),  # quotas: staff only; an empty body changes nothing
    ("get", "/api/v1/tenant/usage"): ("self", None),
    ("get", "/api/v1/regions"): ("catalogue", None),
    ("get", "/api/v1/regions/{code}"): ("catalogue", None),
    ("get", "/api/v1/frameworks"): ("catalogue", None),
    ("get", "/api/v1/frameworks/{slug}"): ("catalogue", None),
    ("get", "/api/v1/tenant/members"): ("list", "member"),
    ("post", "/api/v1/tenant/members"): ("create", "member"),
    ("get", "/api/v1/tenant/members/{id}"): ("object", "member"),
    ("patch", "/api/v1/tenant/members/{id}"): ("object", "member"),
    ("delete", "/api/v1/tenant/members/{id}"): ("object", "member"),
    ("get", "/api/v1/tokens"): ("list", "token"),
    ("post", "/api/v1/tokens"): ("create", "token"),
    ("get", "/api/v1/tokens/{id}"): ("object", "token"),
    ("delete", "/api/v1/tokens/{id}"): ("object", "token"),
    ("get", "/api/v1/apps"): ("list", "app"),
    ("post", "/api/v1/apps"): ("create", "app"),
    ("get", "/api/v1/apps/{id}"): ("object", "app"),
    ("patch", "/api/v1/apps/{id}"): ("object", "app"),
    ("delete", "/api/v1/apps/{id}"): ("object", "app"),
    ("get", "/api/v1/apps/{id}/nodes"): ("object", "app"),
    ("post", "/api/v1/apps/{id}/start"): ("object", "app"),
    ("post", "/api/v1/apps/{id}/stop"): ("object", "app"),
    ("post", "/api/v1/apps/{id}/upgrade"): ("object", "app"),
    ("post", "/api/v1/apps/{id}/scale"): ("object", "app"),
    ("post", "/api/v1/apps/{id}/rotate-credentials"): ("object", "app"),
    ("post", "/api/v1/apps/{id}/transactions"): ("object", "app"),
    ("get", "/api/v1/apps/{id}/transactions/{tx_id}"): ("object", "app"),
    ("get", "/api/v1/apps/{id}/blocks/{height}"): ("object", "app"),
    ("get", "/api/v1/apps/{id}/state/{contract}/{key}"): ("object", "app"),
    ("get", "/api/v1/apps/{id}/state/{key}"): ("object", "app"),
    ("get", "/api/v1/apps/{id}/chain"): ("object", "app"),
    ("get", "/api/v1/apps/{id}/usage"): ("object", "app"),
    ("get", "/api/v1/apps/{app_id}/users"): ("object", "app"),
    ("post", "/api/v1/apps/{app_id}/users"): ("object", "app"),
    ("get", "/api/v1/apps/{app_id}/users/{id}"): ("app-child", "appuser"),
    ("delete", "/api/v1/apps/{app_id}/users/{id}"): ("app-child", "appuser"),
    ("post", "/api/v1/apps/{app_id}/users/{id}/transactions"): ("app-child", "custodyuser"),
    ("post", "/api/v1/apps/{app_id}/users/{id}/export"): ("app-child", "custodyuser"),
    ("get", "/api/v1/apps/{app_id}/webhooks"): ("object", "app"),
    ("post", "/api/v1/apps/{app_id}/webhooks"): ("object", "app"),
    ("get", "/api/v1/apps/{app_id}/webhooks/{id}"): ("app-child", "webhook"),
    ("patch", "/api/v1/apps/{app_id}/webhooks/{id}"): ("app-child", "webhook"),
    ("delete", "/api/v1/apps/{app_id}/webhooks/{id}"): ("app-child", "webhook"),
    ("get", "/api/v1/apps/{app_id}/webhooks/{webhook_id}/deliveries"): ("app-child", "webhook"),
    ("get", "/api/v1/apps/{app_id}/webhooks/{webhook_id}/deliveries/{id}"): ("app-child", "delivery"),
    ("post", "/api/v1/apps/{app_id}/webhooks/{webhook_id}/deliveries/{id}/redeliver"): ("app-child", "delivery"),
    ("get", "/api/v1/operations"): ("list", "operation"),
    ("get", "/api/v1/operations/{id}"): ("object", "operation"),
    ("post", "/api/v1/operations/{id}/cancel"): ("object", "operation"),
    ("get", "/api/v1/audit-events"): ("list", "event"),
    ("get", "/api/v1/audit-events/{id}"): ("object", "event"),
    ("get", "/api/v1/dcep/institutions"): ("catalogue", None),
    ("get", "/api/v1/dcep/chain"): ("catalogue", None),
    ("get", "/api/v1/dcep/supply"): ("dcep-central", None),
    ("post", "/api/v1/dcep/issuances"): ("dcep-central", "operator"),
    ("post", "/api/v1/dcep/withdrawals"): ("dcep-central", "operator"),
    ("post", "/api/v1/dcep/settlements"): ("dcep-central", None),
    ("get", "/api/v1/dcep/settlements"): ("dcep-settlement", None),
    ("get", "/api/v1/dcep/settlements/{id}"): ("dcep-settlement", "settlement"),
    ("get", "/api/v1/dcep/wallets"): ("dcep-list", "wallet"),
    ("post", "/api/v1/dcep/wallets"): ("dcep-open", "wallet"),
    ("get", "/api/v1/dcep/wallets/{id}"): ("dcep-object", "wallet"),
    ("patch", "/api/v1/dcep/wallets/{id}"): ("dcep-object", "wallet"),
    ("post", "/api/v1/dcep/exchanges"): ("dcep-create", "wallet"),
    ("post", "/api/v1/dcep/redemptions"): ("dcep-create", "wallet"),
    ("post", "/api/v1/dcep/payments"): ("dcep-create", "wallet"),
    ("post", "/api/v1/dcep/payments/batch"): ("dcep-create", "wallet"),
    ("post", "/api/v1/dcep/holds"): ("dcep-create", "wallet"),
    ("get", "/api/v1/dcep/holds"): ("dcep-list", "hold"),
    ("get", "/api/v1/dcep/holds/{id}"): ("dcep-object", "hold"),
    ("post", "/api/v1/dcep/holds/{id}/capture"): ("dcep-object", "hold"),
    ("post", "/api/v1/dcep/holds/{id}/void"): ("dcep-object", "hold"),
    ("get", "/api/v1/dcep/transfers"): ("dcep-list", "transfer"),
    ("get", "/api/v1/dcep/transfers/{id}"): ("dcep-object", "transfer"),
    ("get", "/api/v1/dcep/transfers/{id}/proof"): ("dcep-object", "transfer"),
    ("get", "/api/v1/tenant/billing"): ("self", None),
    ("put", "/api/v1/tenant/billing"): ("self-wallet", None),
    ("get", "/api/v1/tenant/invoices"): ("list", "invoice"),
    ("get", "/api/v1/tenant/invoices/{id}"): ("object", "invoice"),
    ("get", "/api/v1/tenant/invoices/{id}/html"): ("object", "invoice"),
    ("get", "/api/v1/billing/prices"): ("catalogue", None),
    ("post", "/api/v1/billing/prices"): ("staff", "price"),
    ("post", "/api/v1/billing/months/close"): ("staff", "month"),
}

# Every view class mounted under /api/v1/. A plain Django view or a view left out of the
# schema would escape the walk below; this makes adding one a conscious decision.
API_VIEWS = {
    LoginView,
    LogoutView,
    TenantView,
    MemberViewSet,
    TokenViewSet,
    RegionViewSet,
    FrameworkViewSet,
    AppViewSet,
    AppLedgerViewSet,
    AppUserViewSet,
    WebhookViewSet,
    DeliveryViewSet,
    AppUsageViewSet,
    TenantUsageView,
    OperationViewSet,
    AuditEventViewSet,
    InstitutionViewSet,
    ChainView,
    IssuanceViewSet,
    WithdrawalViewSet,
    WalletViewSet,
    ExchangeViewSet,
    RedemptionViewSet,
    PaymentViewSet,
    HoldViewSet,
    TransferViewSet,
    SupplyView,
    SettlementViewSet,
    SpectacularAPIView,
    SpectacularSwaggerView,
    InvoiceViewSet,
    PriceViewSet,
    MonthCloseView,
    BillingView,
    api_index,  # GET /api/v1/: links only, no tenant data
}

# One spelling per path (no trailing slash, as the schema writes it); a key written with the
# slash still counts.
ROUTES = {(method, path.rstrip("/")): kind for (method, path), kind in ROUTES.items()}

# Valid bodies, so that only scoping can be the reason for a refusal.
BODIES = {
    ("patch", "member"): {"role": "viewer"},
    ("patch", "app"): {"name": "pwned", "description": "pwned"},
    ("patch", "webhook"): {"url": "https://evil.example.com/hook", "active": False},
    ("post", "member"): {"username": "b-newcomer", "role": "viewer", "password": "a-long-unusual-passphrase"},
    ("post", "token"): {"name": "b-token"},
    # The same name as A's app: names are per tenant, so A's app must not collide (or show).
    ("post", "app"): {"name": "ledger-a", "regions": ["cn-beijing"]},
    ("post", "price"): {
        "region": "cn-beijing",
        "valid_from": "2099-01-01T00:00:00Z",
        "node_hour_fen": 1,
        "per_1000_tx_fen": 1,
        "gb_month_fen": 1,
        "operator_share_bp": 0,
    },
    ("post", "month"): {"month": "2026-10"},
}

# Bodies for routes whose (method, resource) pair has another body above.
PATH_BODIES = {
    ("post", "/api/v1/apps/{id}/upgrade"): lambda a: {"framework": "bsn-ledger"},
    ("post", "/api/v1/apps/{id}/scale"): lambda a: {"regions": ["cn-beijing", "cn-shenzhen"]},
    ("post", "/api/v1/apps/{app_id}/users"): lambda a: {"name": "b-user", "public_key": generate_key()[1]},
    ("post", "/api/v1/apps/{app_id}/users/{id}/transactions"): lambda a: {
        "contract": "kv",
        "function": "put",
        "args": {"key": "k", "value": "pwned"},
    },
    ("post", "/api/v1/apps/{app_id}/webhooks"): lambda a: {"url": "https://evil.example.com/hook", "events": ["*"]},
    ("post", "/api/v1/apps/{id}/transactions"): lambda a: {
        "tx": {
            "app": str(a["app"]),
            "contract": "kv",
            "function": "put",
            "args": {"key": "k", "value": "v"},
            "signer": "alice-user",
            "nonce": "n1",
            "timestamp": 1764000000000,
        },
        "sig": "AAAA",
    },
}
PATH_BODIES = {(method, path.rstrip("/")): body for (method, path), body in PATH_BODIES.items()}
# Values for path parameters that do not name the object under test.
PATH_PARAMS = {"{tx_id}": "ab" * 32, "{height}": "1", "{contract}": "kv", "{key}": "greeting"}

# List filters that name an object: pointing them at A's objects must find nothing.
REFERENCE_FILTERS = {
    "app": "app",
    "object_id": "app",
    "username": "username",
    "name": "app_name",
    "wallet": "wallet",
}


def _api_views(patterns, prefix: str = ""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _api_views(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and route.startswith("api/v1/"):
            callback = pattern.callback
            yield route, getattr(callback, "cls", None) or getattr(callback, "view_class", None) or callback


def _snapshot(tenant) -> dict:
    """Every row of tenant A, field by field."""

    def rows(queryset):
        return json.dumps(list(queryset.order_by("pk").values()), default=str, sort_keys=True)

    return {
        "apps": rows(ChainApp.objects.filter(tenant=tenant)),
        "nodes": rows(LedgerNode.objects.filter(app__tenant=tenant)),
        "operations": rows(Operation.objects.filter(tenant=tenant)),
        "members": rows(Membership.objects.filter(tenant=tenant)),
        "tokens": rows(ApiToken.objects.filter(membership__tenant=tenant)),
        "audit": rows(AuditEvent.objects.filter(tenant=tenant)),
        "appusers": rows(AppUser.objects.filter(app__tenant=tenant)),
        "custody": rows(CustodyKey.objects.filter(user__app__tenant=tenant)),
        "datakeys": rows(TenantDataKey.objects.filter(tenant=tenant)),
        "webhooks": rows(Webhook.objects.filter(app__tenant=tenant)),
        "deliveries": rows(WebhookDelivery.objects.filter(webhook__app__tenant=tenant)),
        "invoices": rows(Invoice.objects.filter(tenant=tenant)),
        "prices": rows(PriceList.objects.all()),
        "usage": rows(UsageHour.objects.filter(app__tenant=tenant)),
    }


def _without_instance(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "instance"}


def _fill(path: str, **objects) -> str:
    for name, value in {**PATH_PARAMS, **{f"{{{k}}}": str(v) for k, v in objects.items()}}.items():
        path = path.replace(name, value)
    return path


@pytest.fixture
def a_node():
    """A node stand-in behind tenant A's app: B's calls must never reach it."""
    node = FakeNode(lambda method, path, body: (200, {"status": "ok"}))
    yield node
    node.close()


@pytest.fixture
def dcep(owner, outsider, tenant_a, tenant_b, regions, tmp_path):
    """DCEP with money in it: A and B are operator banks, the tier-1 chain is a real node.

    A (acme) has wallets, payments (one of them interbank, settled and anchored, one not
    yet), holds (pending, captured, voided), an exchange, a redemption, a wallet change, a
    withdrawal, and a corporate wallet it opened for the enterprise ``initech``, which paid
    and placed a hold from it. B (globex) has wallets, a payment and a hold of its own; a
    third bank (bank-c) is A's interbank counterparty. A's calls are made through the API
    with known Idempotency-Keys, so the walk can replay them as B.
    """
    home = regions[0]
    Tenant.objects.filter(pk__in=[tenant_a.pk, tenant_b.pk]).update(kind=Tenant.Kind.OPERATOR_BANK)
    bank = institution_ensure(slug="pboc", name="Central Bank", kind=Institution.Kind.CENTRAL_BANK, home_region=home)
    inst_a = institution_ensure(
        slug=tenant_a.slug, name=tenant_a.name, kind=Institution.Kind.OPERATOR_BANK, home_region=home
    )
    inst_b = institution_ensure(
        slug=tenant_b.slug, name=tenant_b.name, kind=Institution.Kind.OPERATOR_BANK, home_region=home
    )
    inst_c = institution_ensure(slug="bank-c", name="Bank C", kind=Institution.Kind.OPERATOR_BANK, home_region=home)
    initech = Tenant.objects.create(slug="initech", name="Initech", kind=Tenant.Kind.ENTERPRISE)
    chain = tier1_provision(regions=[home])
    # The API tests' regions are Docker regions (etcd ordering), but no ordering service runs
    # here: the node runs solo, as the DCEP tests' process region would make it.
    ChainApp.objects.filter(pk=chain.app_id).update(ordering=ChainApp.Ordering.SOLO)
    node = start_tier1_node(chain, tmp_path)

    cb = DcepClient(MembershipFactory(tenant=bank.tenant))
    a, b = DcepClient(owner), DcepClient(outsider)
    c = DcepClient(MembershipFactory(tenant=inst_c.tenant))
    corp_member = MembershipFactory(tenant=initech, user__username="initech-owner")
    corp = DcepClient(corp_member)
    keys: dict[str, tuple[str, dict | None]] = {}  # A's last call per path: (key, body)

    def as_a(path: str, body: dict | None = None, status: int = 201, method: str = "post") -> dict:
        key = f"acme-key-{len(keys)}-{uuid.uuid4().hex[:6]}"
        keys[f"/api/v1/dcep/{path}"] = (key, body)  # the very path the walk will send it to
        return created(getattr(a, method)(f"{path}/", body, key=key), status)

    issue(cb, tenant_a.slug, 20_000_000)
    issue(cb, tenant_b.slug, 5_000_000)
    issue(cb, "bank-c", 1_000_000)
    created(cb.post("withdrawals", {"operator": tenant_a.slug, "amount": 1_000}))
    wallet_open = {"tier": 2, "kind": "personal"}
    wa1 = as_a("wallets", {**wallet_open, "holder_name": "acme-holder-one"})["id"]
    wa2 = as_a("wallets", {**wallet_open, "holder_name": "acme-holder-two", "tier": 3})["id"]
    corporate = {"holder_name": "initech-treasury", "tier": 2, "kind": "corporate", "holder_tenant": "initech"}
    we = as_a("wallets", corporate)["id"]
    as_a(f"wallets/{wa2}", {"tier": 2}, status=200, method="patch")
    wc = open_wallet(c, name="bank-c-holder")
    wb1 = funded_wallet(b, 1_000_000, name="globex-holder-one")
    wb2 = open_wallet(b, name="globex-holder-two")
    as_a("exchanges", {"wallet": wa1, "amount": 3_000_000})
    as_a("exchanges", {"wallet": we, "amount": 1_000_000})
    as_a("payments", {"from_wallet": wa1, "to_wallet": wa2, "amount": 100_000, "memo": "acme-memo-rent"})
    batch = {"payments": [{"from_wallet": wa2, "to_wallet": wa1, "amount": 1_000, "memo": "acme-memo-batch"}]}
    as_a("payments/batch", batch)
    interbank = as_a("payments", {"from_wallet": wa1, "to_wallet": wc, "amount": 30_000, "memo": "acme-memo-to-c"})
    hold = {"from_wallet": wa1, "to_wallet": wa2, "expires_in_s": 3600}
    pending = as_a("holds", {**hold, "amount": 50_000})["id"]
    captured = as_a("holds", {**hold, "amount": 20_000})["id"]
    as_a(f"holds/{captured}/capture", {"amount": 5_000}, status=200)
    voided = as_a("holds", {**hold, "amount": 7_000})["id"]
    as_a(f"holds/{voided}/void", None, status=200)
    as_a("redemptions", {"wallet": wa2, "amount": 1_000})
    created(corp.post("payments", {"from_wallet": we, "to_wallet": wc, "amount": 20_000, "memo": "initech-memo"}))
    created(corp.post("holds", {"from_wallet": we, "to_wallet": wc, "amount": 5_000, "expires_in_s": 3600}))
    created(b.post("payments", {"from_wallet": wb1, "to_wallet": wb2, "amount": 1_000, "memo": "globex-memo"}))
    created(b.post("holds", {"from_wallet": wb1, "to_wallet": wb2, "amount": 500, "expires_in_s": 3600}))

    batch_row, _ = settlement_start(started_by=bank.tenant)
    batch_row = settlement_run(batch_row.pk)
    assert batch_row.status == "anchored", batch_row.last_error
    assert created(a.get(f"transfers/{interbank['id']}/proof"), 200)["settlement"] == str(batch_row.pk)
    as_a("payments", {"from_wallet": wa1, "to_wallet": wc, "amount": 1_000, "memo": "acme-memo-unsettled"})
    statuses = dict(Hold.objects.filter(pk__in=[pending, captured, voided]).values_list("pk", "status"))
    assert sorted(statuses.values()) == ["captured", "pending", "voided"]

    yield {
        "bank_a": inst_a,
        "bank_b": inst_b,
        "enterprise": initech,
        "enterprise_member": corp_member,
        "wallet": wa1,  # the one a list filter names
        "own_wallet": {"operator": wb1, "enterprise": we},
        "settlement": str(batch_row.pk),
        "keys": keys,
    }
    if node.proc and node.proc.poll() is None:
        node.proc.kill()
        node.proc.wait()


@pytest.fixture
def world(owner, member, owner_client, outsider, app_a, regions, a_node, dcep):
    """Tenant A with an app, nodes, users, operations, members, tokens and audit events; B with its own app.

    Both are also operator banks with DCEP money (the ``dcep`` fixture).
    """
    owner_client.post(f"/api/v1/apps/{app_a.pk}/stop")  # an open operation
    b_app = make_app(outsider, "b-app", regions=("cn-shanghai",))
    LedgerNode.objects.filter(app=app_a).update(state=LedgerNode.State.RUNNING, endpoint=a_node.endpoint)
    # Metered usage of A's app (this hour): B's usage answers must not show it.
    UsageHour.objects.create(
        app=app_a, region=app_a.nodes.first().region, hour=counters.hour_of(timezone.now()), tx_committed=7
    )
    a_user = AppUser.objects.create(
        app=app_a, name="alice-user", public_key=generate_key()[1], status=AppUser.Status.ACTIVE
    )
    a_custody, a_private = custody_user(app_a, "carol-custody")  # its sealed key too (no ledger here)
    a_hook, _ = webhook_create(app=app_a, actor=owner.user, url="https://hooks.acme.example/a", events=["*"])
    a_delivery = WebhookDelivery.objects.create(
        webhook=a_hook,
        event_key=f"{app_a.pk}:2:0:0",
        height=2,
        tx_index=0,
        seq=0,
        event={"name": "accepted", "payload": {"lc_id": "acme-lc"}},
        status=WebhookDelivery.Status.SUCCEEDED,
        attempts=1,
    )
    invoice = Invoice.objects.create(
        tenant=owner.tenant,
        month=dt.date(2026, 10, 1),
        number="BSN-202610-acme",
        total_fen=12_345,
        issued_at=dt.datetime(2026, 11, 1, 7, tzinfo=dt.UTC),
        due_at=dt.datetime(2026, 11, 16, 7, tzinfo=dt.UTC),
    )
    a = {
        "invoice": invoice.pk,
        "b_app": b_app.pk,
        "appuser": a_user.pk,
        "custodyuser": a_custody.pk,
        "webhook": a_hook.pk,
        "delivery": a_delivery.pk,
        "tenant": owner.tenant,
        "app": app_a.pk,
        "app_name": app_a.name,
        "operation": Operation.objects.filter(app=app_a).first().pk,
        "member": member.pk,
        "token": token_issue(membership=member, name="bob's").token.pk,
        "event": AuditEvent.objects.filter(tenant=owner.tenant).first().pk,
        "username": "bob",
        "wallet": dcep["wallet"],
        "dcep": dcep,
    }
    secrets = {
        str(v)
        for v in (
            *ChainApp.objects.filter(tenant=owner.tenant).values_list("pk", flat=True),
            *LedgerNode.objects.filter(app__tenant=owner.tenant).values_list("pk", flat=True),
            *LedgerNode.objects.filter(app__tenant=owner.tenant).values_list("name", flat=True),
            *Operation.objects.filter(tenant=owner.tenant).values_list("pk", flat=True),
            *Membership.objects.filter(tenant=owner.tenant).values_list("pk", flat=True),
            *ApiToken.objects.filter(membership__tenant=owner.tenant).values_list("pk", flat=True),
            *ApiToken.objects.filter(membership__tenant=owner.tenant).values_list("prefix", flat=True),
            *AuditEvent.objects.filter(tenant=owner.tenant).values_list("pk", flat=True),
            *AppUser.objects.filter(app__tenant=owner.tenant).values_list("pk", flat=True),
            *AppUser.objects.filter(app__tenant=owner.tenant).values_list("public_key", flat=True),
            a_private,
            *Webhook.objects.filter(app__tenant=owner.tenant).values_list("pk", flat=True),
            *WebhookDelivery.objects.filter(webhook__app__tenant=owner.tenant).values_list("pk", flat=True),
            "hooks.acme.example",
            "acme-lc",
            invoice.pk,
            app_a.admin_public_key,
            *LedgerNode.objects.filter(app__tenant=owner.tenant).values_list("public_key", flat=True),
            # Not A's event hashes: the audit chain is platform-wide, so B's first event after one
            # of A's carries its hash as prev_hash — an opaque chain position, no content, no handle
            # for any endpoint (docs/tenancy.md, "Audit chain").
            owner.tenant.pk,
            owner.tenant.slug,
            "alice",
            "bob",
        )
    }
    return a, secrets


# --------------------------------------------------------------------------- the DCEP walk


def _dcep_view(kind: str, party) -> tuple[dict[str, list[str]], set[str]]:
    """What a walker must not see of bank A, and every identifying string of what it must not see.

    ``party`` is the walker's institution (an operator bank) or tenant (an enterprise). What it
    may see is written here from docs/dcep.md, not taken from the selectors under test: its
    own wallets (an operator: the ones it operates; an enterprise: the ones opened for it),
    the transfers with a leg on one of its accounts (or on a hold from one of them), its holds.
    Counterparty wallet numbers of those transfers and holds are visible too.
    """
    if kind == "operator":
        accounts = Account.objects.filter(operator=party)
    else:
        accounts = Account.objects.filter(Q(holder_tenant=party) | Q(hold__from_account__holder_tenant=party))
    wallets = accounts.filter(kind=Account.Kind.WALLET)
    holds = Hold.objects.filter(from_account__in=wallets)
    transfers = Transfer.objects.filter(
        Q(from_account__in=accounts) | Q(to_account__in=accounts) | Q(entries__account__in=accounts)
    ).distinct()
    seen_numbers = set(wallets.values_list("number", flat=True))
    for source, target in transfers.values_list("from_account__number", "to_account__number"):
        seen_numbers |= {source, target} - {None}
    seen_numbers |= set(holds.values_list("to_account__number", flat=True))

    hidden_wallets = Account.objects.filter(kind=Account.Kind.WALLET).exclude(number__in=seen_numbers)
    hidden_transfers = Transfer.objects.exclude(pk__in=transfers.values("pk"))
    hidden_holds = Hold.objects.exclude(pk__in=holds.values("pk"))
    secrets = {
        *hidden_wallets.values_list("number", flat=True),
        *Account.objects.filter(kind=Account.Kind.WALLET).exclude(pk__in=wallets).values_list("holder_name", flat=True),
        # the enterprises other banks opened wallets for (a bank's customers are its own business)
        *hidden_wallets.exclude(holder_tenant=None)
        .exclude(holder_tenant__in=wallets.exclude(holder_tenant=None).values("holder_tenant"))
        .values_list("holder_tenant__slug", flat=True),
        *(str(pk) for pk in hidden_transfers.values_list("pk", flat=True)),
        *hidden_transfers.exclude(memo="").values_list("memo", flat=True),
        *hidden_transfers.exclude(tier1_tx_id="").values_list("tier1_tx_id", flat=True),
        *Tier1Op.objects.exclude(transfer__in=transfers).values_list("tx_id", flat=True),
        *(str(pk) for pk in hidden_holds.values_list("pk", flat=True)),
    } - {""}
    bank_a = Institution.objects.get(tenant__slug="acme")
    of_a = {
        "wallet": list(hidden_wallets.filter(operator=bank_a).values_list("number", flat=True)),
        "transfer": [
            str(pk)
            for pk in hidden_transfers.filter(Q(from_operator=bank_a) | Q(to_operator=bank_a)).values_list(
                "pk", flat=True
            )
        ],
        "hold": [str(pk) for pk in hidden_holds.filter(from_account__operator=bank_a).values_list("pk", flat=True)],
    }
    assert all(of_a.values()), of_a  # the walk has something of A's to try, for every resource
    return of_a, secrets


def _dcep_bodies(path: str, wallet: str, own: str) -> list[dict]:
    """Valid bodies of a dcep-create POST that name ``wallet`` (A's or a random one) as the money's source."""
    payment = {"from_wallet": wallet, "to_wallet": own, "amount": 1}
    return {
        "/api/v1/dcep/exchanges": [{"wallet": wallet, "amount": 1}],
        "/api/v1/dcep/redemptions": [{"wallet": wallet, "amount": 1}],
        "/api/v1/dcep/payments": [payment],
        "/api/v1/dcep/payments/batch": [{"payments": [payment]}, {"payments": [payment], "linked": True}],
        "/api/v1/dcep/holds": [{**payment, "expires_in_s": 600}],
    }[path]


_keys = iter(range(10**9))


def _send(client, method: str, path: str, body=None, *, key: str | None = None):
    """One DCEP call with an Idempotency-Key (a fresh one unless given)."""
    headers = {}
    if method in ("post", "patch"):
        headers["HTTP_IDEMPOTENCY_KEY"] = key or f"walk-{next(_keys)}-{uuid.uuid4().hex[:8]}"
    return getattr(client, method)(path, body, format="json", **headers)


def _same_answer(theirs, nowhere, their_id: str, no_id: str) -> None:
    """Two answers are the same once the id each one was asked about is blanked out."""
    assert theirs.status_code == nowhere.status_code, (theirs.content, nowhere.content)
    assert theirs.get("Idempotent-Replayed") is None and nowhere.get("Idempotent-Replayed") is None
    text_theirs = theirs.content.decode().replace(their_id, "<id>")
    text_nowhere = nowhere.content.decode().replace(no_id, "<id>")
    assert json.loads(text_theirs) == json.loads(text_nowhere)


def _no_secret(resp, secrets: set[str], where) -> None:
    text = resp.content.decode()
    leaked = sorted(secret for secret in secrets if secret in text)
    assert not leaked, (where, leaked)


def _walk_dcep(client, walker: str, kind: str, resource, method: str, path: str, operation, ctx) -> None:
    """One DCEP route as ``walker`` ("operator": bank B; "enterprise": bank A's corporate customer)."""
    dcep, of_a, secrets = ctx["dcep"], ctx["of_a"], ctx["secrets"]
    own = dcep["own_wallet"][walker]
    replay = dcep["keys"]

    if kind == "dcep-central":
        bodies = ({"operator": "acme", "amount": 1}, {"operator": "no-such-bank", "amount": 1})
        theirs_body, nowhere_body = bodies if resource == "operator" else (None, None)
        theirs = assert_problem(_send(client, method, path, theirs_body), 403, "not-allowed")
        nowhere = assert_problem(_send(client, method, path, nowhere_body), 403, "not-allowed")
        assert theirs == nowhere, path

    elif kind == "dcep-settlement":
        if resource is None:
            resp = _send(client, method, path)
            assert resp.status_code == 200, resp.content
            ids = [row["id"] for row in resp.json()["results"]]
            assert ids == ([dcep["settlement"]] if walker == "operator" else []), ids
            _no_secret(resp, ctx["tier2"], path)
        else:
            target, nowhere = _fill(path, id=dcep["settlement"]), _fill(path, id=uuid.uuid4())
            missing = assert_problem(_send(client, method, nowhere), 404, "not-found")
            resp = _send(client, method, target)
            if walker == "operator":  # every batch is every operator's business (its positions)
                assert resp.status_code == 200, resp.content
                _no_secret(resp, ctx["tier2"], target)
            else:
                theirs = assert_problem(resp, 404, "not-found")
                assert _without_instance(theirs) == _without_instance(missing), target

    elif kind == "dcep-list":
        params = [{}] + [
            {p["name"]: str(dcep[REFERENCE_FILTERS[p["name"]]])}
            for p in operation.get("parameters", [])
            if p["name"] in REFERENCE_FILTERS
        ]
        for query in params:
            resp = client.get(path, query)
            assert resp.status_code == 200, (path, query, resp.content)
            _no_secret(resp, secrets, (path, query))
            # not empty for want of rows: the walker has its own
            assert resp.json()["count"] == 0 if query else resp.json()["count"] >= 1, (path, query)

    elif kind == "dcep-open":
        body = {"holder_name": f"{walker}-new", "tier": 2, "kind": "personal"}
        resp = _send(client, method, path, body)
        if walker == "operator":
            opened = Account.objects.get(number=created(resp)["id"])
            assert opened.operator == dcep["bank_b"], opened
        else:
            assert_problem(resp, 403, "not-allowed")

    elif kind == "dcep-create":
        nowhere_wallet = new_wallet_number()
        if path in replay:  # A's own request under A's own key: B is not answered with A's response
            key, body = replay[path]
            resp = _send(client, method, path, body, key=key)
            assert resp.status_code in (403, 404) or resp.json().get("succeeded") == 0, resp.content
            assert resp.get("Idempotent-Replayed") is None
            sent = json.dumps(body)  # wallet numbers the caller sent may be named back to it
            _no_secret(resp, {secret for secret in secrets if secret not in sent}, path)
        for wallet in of_a["wallet"]:
            theirs_bodies = _dcep_bodies(path, wallet, own)
            nowhere_bodies = _dcep_bodies(path, nowhere_wallet, own)
            for theirs_body, nowhere_body in zip(theirs_bodies, nowhere_bodies, strict=True):
                theirs = _send(client, method, path, theirs_body)
                nowhere = _send(client, method, path, nowhere_body)
                _same_answer(theirs, nowhere, wallet, nowhere_wallet)
                if path.endswith("/batch"):
                    refused = theirs.json()["results"][0]
                    assert (refused["status"], refused["code"]) == (404, "not-found"), theirs.content
                    assert theirs.json()["succeeded"] == 0
                    assert theirs.status_code == (409 if theirs_body.get("linked") else 201)
                elif walker == "enterprise" and path.endswith(("/exchanges", "/redemptions")):
                    assert_problem(theirs, 403, "not-allowed")
                else:
                    assert_problem(theirs, 404, "not-found")

    elif kind == "dcep-object":
        body = {"status": "frozen"} if method == "patch" else {"amount": 1} if path.endswith("/capture") else None
        for their_id in of_a[resource]:
            no_id = new_wallet_number() if resource == "wallet" else str(uuid.uuid4())
            target, nowhere = _fill(path, id=their_id), _fill(path, id=no_id)
            if method != "get" and target in replay:
                key, replay_body = replay[target]
                resp = _send(client, method, target, replay_body, key=key)
                assert_problem(resp, 404, "not-found")
            theirs = _send(client, method, target, body)
            missing = _send(client, method, nowhere, body)
            assert_problem(theirs, 404, "not-found")
            _same_answer(theirs, missing, their_id, no_id)

    else:  # pragma: no cover - the ROUTES table only uses the kinds above
        pytest.fail(f"unknown kind {kind}")


@pytest.mark.django_db
def test_every_api_view_is_known():
    mounted = {view for _, view in _api_views(get_resolver().url_patterns)}
    assert mounted == API_VIEWS, f"unclassified: {mounted - API_VIEWS}, gone: {API_VIEWS - mounted}"


@pytest.mark.django_db
def test_outsider_cannot_read_write_or_detect_tenant_a(world, outsider_client, outsider, tenant_b, a_node):
    a, secrets = world
    schema = outsider_client.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operations = {(method, path): op for path, ops in schema["paths"].items() for method, op in ops.items()}
    unknown = sorted(set(operations) - set(ROUTES))
    assert not unknown, f"routes the isolation matrix cannot classify (add them to ROUTES): {unknown}"
    stale = sorted(set(ROUTES) - set(operations))
    assert not stale, f"ROUTES lists operations the schema no longer has: {stale}"

    dcep = a["dcep"]
    of_a, dcep_secrets = _dcep_view("operator", dcep["bank_b"])
    assert {"initech", "initech-treasury", "acme-holder-one", "acme-memo-rent", "initech-memo"} <= dcep_secrets
    ctx = {"dcep": dcep, "of_a": of_a, "secrets": secrets | dcep_secrets, "tier2": dcep_secrets}
    before = _snapshot(a["tenant"]), operator_snapshot(dcep["bank_a"], [dcep["enterprise"]]), tier1.chain_supply()
    walked = []
    # logout last: it ends the outsider's session
    for (method, path), operation in sorted(operations.items(), key=lambda item: item[0][1] == "/api/v1/auth/logout"):
        kind, resource = ROUTES[(method, path)]
        call = getattr(outsider_client, method)
        body = PATH_BODIES[(method, path)](a) if (method, path) in PATH_BODIES else BODIES.get((method, resource))
        walked.append((method, path))

        if kind == "catalogue":
            url = path.replace("{code}", "cn-beijing").replace("{slug}", "bsn-ledger")
            assert call(url).status_code == 200, url
            for verb in ("post", "put", "patch", "delete"):
                if verb not in schema["paths"][path]:
                    assert_problem(getattr(outsider_client, verb)(url, {"status": "draining"}, format="json"), 405)

        elif kind == "login":
            resp = outsider_client.post(
                path, {"username": "mallory", "password": "correct-horse-battery"}, format="json"
            )
            assert resp.status_code == 201
            assert ApiToken.objects.get(pk=resp.json()["id"]).membership == outsider

        elif kind == "self":
            resp = call(path)
            assert resp.status_code in (200, 204), (method, path, resp.content)
            assert not any(secret in resp.content.decode() for secret in secrets), (method, path)

        elif kind == "list":
            params = [{}] + [
                {p["name"]: str(a[REFERENCE_FILTERS[p["name"]]])}
                for p in operation.get("parameters", [])
                if p["name"] in REFERENCE_FILTERS
            ]
            for query in params:
                resp = call(path, query)
                assert resp.status_code == 200, (path, query, resp.content)
                text = resp.content.decode()
                leaked = [secret for secret in secrets if secret in text]
                assert not leaked, (path, query, leaked)
                if query:
                    assert resp.json()["count"] == 0, (path, query)

        elif kind == "create":
            resp = call(path, body, format="json")
            assert resp.status_code in (201, 202), (path, resp.content)
            created = resp.json()
            if resource == "app":
                assert ChainApp.objects.get(pk=created["app"]).tenant == tenant_b
            elif resource == "member":
                assert Membership.objects.get(pk=created["id"]).tenant == tenant_b
                # and naming another tenant's user creates an account in B's own namespace:
                # bob is neither pulled in nor detected.
                named = call(
                    path, {"username": "bob", "role": "viewer", "password": "another-long-passphrase"}, format="json"
                )
                assert named.status_code == 201 and named.json()["username"] == f"bob@{tenant_b.slug}"
                assert list(Membership.objects.filter(user__username="bob").values_list("tenant__slug", flat=True)) == [
                    "acme"
                ]
            elif resource == "token":
                assert ApiToken.objects.get(pk=created["id"]).membership == outsider
            assert not any(secret in resp.content.decode() for secret in secrets), path

        elif kind == "object":
            target = _fill(path, id=a[resource], app_id=a[resource])
            nowhere = _fill(path, id=uuid.uuid4(), app_id=uuid.uuid4())
            theirs = assert_problem(call(target, body, format="json"), 404, "not-found")
            missing = assert_problem(call(nowhere, body, format="json"), 404, "not-found")
            assert _without_instance(theirs) == _without_instance(missing), path
            assert theirs["instance"] == target.split("?")[0]

        elif kind == "app-child":  # {webhook_id}, when the path has one, is A's webhook too
            under_a = _fill(path, app_id=a["app"], id=a[resource], webhook_id=a["webhook"])
            under_b = _fill(path, app_id=a["b_app"], id=a[resource], webhook_id=a["webhook"])
            nowhere = _fill(path, app_id=uuid.uuid4(), id=uuid.uuid4(), webhook_id=uuid.uuid4())
            expected = _without_instance(assert_problem(call(nowhere, body, format="json"), 404, "not-found"))
            for target in (under_a, under_b):
                theirs = assert_problem(call(target, body, format="json"), 404, "not-found")
                assert _without_instance(theirs) == expected, target

        elif kind == "self-wallet":
            nowhere_wallet = new_wallet_number()
            for wallet in (dcep["own_wallet"]["enterprise"], a["wallet"]):  # initech's (held) and A's own
                theirs = assert_problem(call(path, {"wallet": wallet}, format="json"), 404, "not-found")
                missing = assert_problem(call(path, {"wallet": nowhere_wallet}, format="json"), 404, "not-found")
                assert theirs["detail"].replace(wallet, "N") == missing["detail"].replace(nowhere_wallet, "N")
            assert not BillingAccount.objects.exists()

        elif kind == "staff":
            assert_problem(call(path, body, format="json"), 403, "staff-only")

        elif kind.startswith("dcep-"):
            _walk_dcep(outsider_client, "operator", kind, resource, method, path, operation, ctx)

        else:  # pragma: no cover - the ROUTES table only uses the kinds above
            pytest.fail(f"unknown kind {kind}")

    assert len(walked) == len(ROUTES)
    after = _snapshot(a["tenant"]), operator_snapshot(dcep["bank_a"], [dcep["enterprise"]]), tier1.chain_supply()
    assert after == before, "tenant A's rows changed while tenant B walked the API"
    assert a_node.requests == [], "a call for tenant A's app reached its node"


@pytest.mark.django_db
def test_enterprise_sees_only_its_own_dcep(world):
    """Bank A's corporate customer walks every DCEP route: its own wallet, nothing else of A's (or B's)."""
    a, secrets = world
    dcep = a["dcep"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(membership=dcep['enterprise_member'], name='t').secret}")
    schema = client.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operations = {
        (method, path): op
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if path.startswith("/api/v1/dcep")
    }
    assert set(operations) == {route for route in ROUTES if route[1].startswith("/api/v1/dcep")}
    of_a, dcep_secrets = _dcep_view("enterprise", dcep["enterprise"])
    assert {"acme-holder-one", "acme-memo-rent", "globex-memo", dcep["own_wallet"]["operator"]} <= dcep_secrets
    assert not {"initech", "initech-treasury", "initech-memo", dcep["own_wallet"]["enterprise"]} & dcep_secrets
    # Its wallet names its operator, so bank A's slug is no secret to it; all else of A's is.
    ctx = {"dcep": dcep, "of_a": of_a, "secrets": (secrets - {"acme"}) | dcep_secrets, "tier2": dcep_secrets}
    before = _snapshot(a["tenant"]), operator_snapshot(dcep["bank_a"]), tier1.chain_supply()
    for (method, path), operation in operations.items():
        kind, resource = ROUTES[(method, path)]
        if kind == "catalogue":
            assert getattr(client, method)(path).status_code == 200, path
        else:
            _walk_dcep(client, "enterprise", kind, resource, method, path, operation, ctx)
    after = _snapshot(a["tenant"]), operator_snapshot(dcep["bank_a"]), tier1.chain_supply()
    assert after == before, "bank A's rows changed while its customer walked the API"


@pytest.mark.django_db
def test_catalogue_is_the_same_for_every_tenant(world, owner_client, outsider_client):
    for path in ("/api/v1/regions", "/api/v1/frameworks", "/api/v1/regions/cn-beijing"):
        assert owner_client.get(path).json() == outsider_client.get(path).json()
    assert Region.objects.count() == 3


@pytest.mark.django_db
def test_operation_filter_does_not_reveal_other_tenants_app_ids(world, outsider_client):
    a, _ = world
    theirs = outsider_client.get("/api/v1/operations", {"app": str(a["app"])})
    nowhere = outsider_client.get("/api/v1/operations", {"app": str(uuid.uuid4())})
    assert theirs.status_code == nowhere.status_code == 200
    assert theirs.json() == nowhere.json() == {"count": 0, "next": None, "previous": None, "results": []}

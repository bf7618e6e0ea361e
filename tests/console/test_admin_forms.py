"""Every model in the console: what its change form lets an operator edit (nothing the
platform derives), and that rows the platform makes through services cannot be added or
deleted in the admin (no button, 403, no "delete selected")."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import RequestFactory

from apps.chainapps.models import ChainApp, LedgerNode, Operation
from apps.regions.models import Region
from apps.tenants.models import Tenant
from apps.tenants.services import token_issue

QUOTAS = {"max_apps", "max_nodes", "max_tps", "max_storage_mb", "max_daily_volume_mb"}

# The only fields an operator may type into, per model (everything else is read-only or absent).
EDITABLE = {
    "regions.Region": {
        "name",
        "city",
        "country",
        "operator",
        "max_nodes",
        "cpu_capacity",
        "memory_capacity_mb",
        "warm_nodes",
    },
    "chainapps.ChainApp": {"name", "description", "tps_quota", "storage_mb"},
    "chainapps.Framework": set(),
    "chainapps.LedgerNode": set(),
    "chainapps.Operation": set(),
    "tenants.Tenant": {"name", *QUOTAS},
    "tenants.ApiToken": set(),
    "audit.AuditEvent": set(),
    "ordering.OrderingCluster": set(),
    "ordering.OrderingMember": set(),
    "ordering.AppOrderingCredential": set(),
    "dcep.Institution": set(),
    "dcep.Wallet": set(),
    "dcep.Transfer": set(),
    "dcep.Settlement": set(),
    "dcep.Hold": set(),
    "dcep.HoldRelease": set(),
    "billing.PriceList": set(),  # a price change is a new row (add form), never an edit
    "billing.Invoice": set(),
    "billing.Suspension": set(),
    "billing.BillingAccount": {"tenant", "wallet"},  # saved through billing_account_set
    "custody.TenantDataKey": set(),
    "custody.CustodyKey": set(),
    "events.EventFeed": set(),
    "events.EventCursor": set(),
    "gateway.AppUser": set(),
    "metering.UsageHour": set(),
    "metering.NodeMeter": set(),
    "webhooks.Webhook": set(),
    "webhooks.WebhookDelivery": set(),
}

# Derived by the platform: never an editable field anywhere (a second net under EDITABLE).
DERIVED = {
    "status",
    "state",
    "desired_state",
    "status_reason",
    "host_port",
    "peer_host_port",
    "endpoint",
    "runtime_id",
    "generation",
    "chain_height",
    "chain_head",
    "chain_proposer",
    "chain_seen_at",
    "last_seen_at",
    "public_key",
    "admin_public_key",
    "signing_public_key",
    "balance",
    "held",
    "hash",
    "prev_hash",
    "last_hash",
    "digest",
    "prefix",
    "token",
    "merkle_root",
    "anchor_height",
    "attempts",
    "version",
    "ordering",
    "deleted_at",
    "is_active",
    "builtin",
    "image",
    "revoked_at",
}

# Rows an operator may create in the console (through a service, in save_model).
ADDABLE = {"chainapps.Framework", "tenants.Tenant", "billing.PriceList", "billing.BillingAccount"}

OUTSIDE = ("auth.", "axes.")  # Django's users and groups, the login-lockout tables


def console_admins():
    return sorted(
        ((m._meta.label, ma) for m, ma in admin.site._registry.items() if not m._meta.label.startswith(OUTSIDE)),
        key=lambda pair: pair[0],
    )


@pytest.fixture
def staff_request(operator):
    request = RequestFactory().get("/admin/")
    request.user = operator
    return request


def test_every_console_model_is_classified():
    assert {label for label, _ in console_admins()} == set(EDITABLE), "classify a new admin model in EDITABLE"


@pytest.mark.django_db
@pytest.mark.parametrize("label", sorted(EDITABLE))
def test_change_form_fields(label, staff_request):
    ma = dict(console_admins())[label]
    obj = ma.model()
    form = ma.get_form(staff_request, obj, change=True)
    fields = set(form.base_fields)
    assert fields <= EDITABLE[label], f"{label}: editable {sorted(fields - EDITABLE[label])}"
    assert not fields & DERIVED, f"{label}: derived fields editable: {sorted(fields & DERIVED)}"
    assert not any(name.endswith("_encrypted") for name in fields)


@pytest.mark.django_db
@pytest.mark.parametrize("label", sorted(EDITABLE))
def test_add_and_delete_refused_where_services_make_the_rows(label, staff_request):
    ma = dict(console_admins())[label]
    assert ma.has_add_permission(staff_request) is (label in ADDABLE)
    assert ma.has_delete_permission(staff_request, ma.model()) is False
    assert "delete_selected" not in ma.get_actions(staff_request)
    for inline in ma.get_inline_instances(staff_request, ma.model()):
        assert not inline.has_add_permission(staff_request, ma.model()), inline
        assert not inline.has_delete_permission(staff_request, ma.model()), inline
        assert not inline.has_change_permission(staff_request, ma.model()), inline


@pytest.mark.django_db
def test_pages_refuse_add_and_delete_and_show_no_buttons(console, running_app, owner):
    node = running_app.nodes.first()
    op = Operation.objects.filter(app=running_app).first()
    region = Region.objects.get(code="cn-beijing")
    token = token_issue(membership=owner, name="t").token
    rows = {
        "chainapps/ledgernode": node.pk,
        "chainapps/chainapp": running_app.pk,
        "chainapps/operation": op.pk,
        "regions/region": region.pk,
        "tenants/tenant": owner.tenant.pk,
        "tenants/apitoken": token.pk,
    }
    for path, pk in rows.items():
        listing = console.get(f"/admin/{path}/")
        assert listing.status_code == 200, path
        page = listing.content.decode()
        assert f'href="/admin/{path}/add/"' not in page or path == "tenants/tenant", path
        assert 'value="delete_selected"' not in page, path
        assert console.get(f"/admin/{path}/{pk}/delete/").status_code == 403, path
        detail = console.get(f"/admin/{path}/{pk}/change/")
        assert detail.status_code == 200, path
        assert f"/admin/{path}/{pk}/delete/" not in detail.content.decode(), path
    for path in ("chainapps/ledgernode", "chainapps/chainapp", "chainapps/operation", "regions/region"):
        assert console.get(f"/admin/{path}/add/").status_code == 403, path
    # Nothing went: the rows are all still there.
    assert LedgerNode.objects.filter(pk=node.pk).exists() and ChainApp.objects.filter(pk=running_app.pk).exists()
    assert Region.objects.filter(pk=region.pk).exists() and Tenant.objects.filter(pk=owner.tenant.pk).exists()


@pytest.mark.django_db
def test_node_page_shows_health_and_no_secret(console, running_app):
    node = running_app.nodes.order_by("region__code").first()
    LedgerNode.objects.filter(pk=node.pk).update(state="unhealthy", chain_height=301, last_error="no answer")
    page = console.get("/admin/chainapps/ledgernode/").content.decode()
    assert "unhealthy: no answer" in page and "301" in page
    detail = console.get(f"/admin/chainapps/ledgernode/{node.pk}/change/").content.decode()
    assert "private_key" not in detail and "api_credential" not in detail
    for field in ("host_port", "chain_height", "generation", "state", "endpoint"):
        assert f'name="{field}"' not in detail, field  # shown as text, not as an input


LISTS = [
    "chainapps/ledgernode",
    "chainapps/chainapp",
    "chainapps/operation",
    "regions/region",
    "tenants/tenant",
    "tenants/apitoken",
    "audit/auditevent",
    "gateway/appuser",
]


@pytest.mark.django_db
def test_changelist_queries_do_not_grow_with_rows(console, owner, regions):
    """No N+1 on the console's lists: the same number of queries for 1 app as for 5."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.console.conftest import make_app

    def counts() -> dict[str, int]:
        found = {}
        for path in LISTS:
            with CaptureQueriesContext(connection) as ctx:
                assert console.get(f"/admin/{path}/").status_code == 200, path
            found[path] = len(ctx.captured_queries)
        return found

    make_app(owner, "one", regions=("cn-beijing", "cn-shanghai"))
    token_issue(membership=owner, name="one")
    few = counts()
    for i in range(4):
        make_app(owner, f"more-{i}", regions=("cn-beijing", "cn-shanghai"))
        token_issue(membership=owner, name=f"more-{i}")
    assert counts() == few

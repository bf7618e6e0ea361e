"""An operator (or a forged request) posting derived fields changes nothing: the admin
form has no such field, and a view-only model refuses the POST outright."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.chainapps.models import ChainApp, LedgerNode
from apps.regions.models import Region
from tests.console.conftest import change_form_data

pytestmark = pytest.mark.django_db


def test_forged_node_form_with_host_port_changes_nothing(console, running_app):
    node = running_app.nodes.order_by("region__code").first()
    LedgerNode.objects.filter(pk=node.pk).update(host_port=31001, chain_height=5, generation=1)
    before = LedgerNode.objects.filter(pk=node.pk).values().get()
    audits = AuditEvent.objects.count()
    forged = {"host_port": 1, "chain_height": 999, "generation": 7, "state": "running", "endpoint": "http://evil:1"}
    resp = console.post(f"/admin/chainapps/ledgernode/{node.pk}/change/", forged)
    assert resp.status_code == 403
    assert LedgerNode.objects.filter(pk=node.pk).values().get() == before
    assert AuditEvent.objects.count() == audits


def test_forged_app_form_changes_only_what_the_service_allows(console, running_app):
    url = f"/admin/chainapps/chainapp/{running_app.pk}/change/"
    forged = change_form_data(
        console,
        url,
        description="renamed by ops",
        status="failed",
        desired_state="deleted",
        version=9,
        ordering="etcd",
        admin_public_key="00" * 32,
        tenant=str(running_app.tenant_id),
    )
    before = ChainApp.objects.filter(pk=running_app.pk).values().get()
    resp = console.post(url, forged)
    assert resp.status_code == 302, resp.content[:2000]
    after = ChainApp.objects.filter(pk=running_app.pk).values().get()
    assert after["description"] == "renamed by ops"
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {"description", "updated_at"}
    assert AuditEvent.objects.filter(action="app.update").latest("sequence").data == {"description": "renamed by ops"}


def test_forged_region_form_cannot_set_status_or_move_the_engine(console, regions):
    beijing = regions[0]
    url = f"/admin/regions/region/{beijing.pk}/change/"
    forged = change_form_data(
        console,
        url,
        max_nodes=50,
        status="unavailable",
        driver="process",
        docker_base_url="tcp://10.0.0.1:2375",
        publish_host="0.0.0.0",
        last_error="forged",
    )
    before = Region.objects.filter(pk=beijing.pk).values().get()
    assert console.post(url, forged).status_code == 302
    after = Region.objects.filter(pk=beijing.pk).values().get()
    assert {k for k in after if after[k] != before[k]} == {"max_nodes", "updated_at"}


def test_forged_tenant_form_cannot_flip_is_active_or_slug(console, owner):
    tenant = owner.tenant
    url = f"/admin/tenants/tenant/{tenant.pk}/change/"
    forged = change_form_data(console, url, is_active="", slug="stolen", kind="central_bank")
    assert console.post(url, forged).status_code == 302
    tenant.refresh_from_db()
    assert (tenant.is_active, tenant.slug, tenant.kind) == (True, "acme", "enterprise")
    assert not AuditEvent.objects.filter(action__startswith="tenant.", object_id=str(tenant.pk)).exists()


def test_forged_delete_and_add_posts_are_refused(console, running_app, regions):
    node = running_app.nodes.first()
    assert console.post(f"/admin/chainapps/ledgernode/{node.pk}/delete/", {"post": "yes"}).status_code == 403
    assert console.post(f"/admin/chainapps/chainapp/{running_app.pk}/delete/", {"post": "yes"}).status_code == 403
    assert console.post(f"/admin/regions/region/{regions[0].pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [str(running_app.pk)], "post": "yes"}
    console.post("/admin/chainapps/chainapp/", bulk)
    assert ChainApp.objects.filter(pk=running_app.pk, deleted_at__isnull=True).exists()
    assert LedgerNode.objects.filter(pk=node.pk).exists()
    nodes = LedgerNode.objects.count()
    forged_node = {"app": str(running_app.pk), "region": str(regions[2].pk), "name": "x", "host_port": 1}
    assert console.post("/admin/chainapps/ledgernode/add/", forged_node).status_code == 403
    assert LedgerNode.objects.count() == nodes

"""Each console action calls the service the API / commands use and writes an audit event
naming the operator; refusals are shown, and nothing else changes."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.chainapps import tasks
from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.regions.models import Region
from apps.tenants.models import ApiToken, Tenant
from apps.tenants.services import token_issue
from tests.console.conftest import change_form_data

pytestmark = pytest.mark.django_db


def act(console, path: str, action: str, pks) -> str:
    resp = console.post(f"/admin/{path}/", {"action": action, "_selected_action": [str(pk) for pk in pks]}, follow=True)
    assert resp.status_code == 200
    return resp.content.decode()


def last_event(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).latest("sequence")


def test_region_drain_and_enable(console, operator, regions):
    beijing = regions[0]
    page = act(console, "regions/region", "drain", [beijing.pk])
    assert "1 region(s) draining." in page
    assert Region.objects.get(pk=beijing.pk).status == Region.Status.DRAINING
    event = last_event("region.draining")
    assert event.object_id == "cn-beijing" and event.actor_id == operator.pk and event.data == {"before": "active"}
    assert Region.objects.exclude(pk=beijing.pk).filter(status=Region.Status.ACTIVE).count() == 2

    page = act(console, "regions/region", "enable", [beijing.pk])
    assert "1 region(s) active." in page
    assert Region.objects.get(pk=beijing.pk).status == Region.Status.ACTIVE
    assert last_event("region.active").data == {"before": "draining"}


def test_region_list_shows_engine_health_and_capacity(console, owner, regions):
    from tests.api.conftest import make_app

    make_app(owner, "a", regions=("cn-beijing", "cn-shanghai"))
    make_app(owner, "b", regions=("cn-beijing",))
    Region.objects.filter(code="cn-beijing").update(max_nodes=4)
    Region.objects.filter(code="cn-shenzhen").update(status="unavailable", last_error="engine did not answer")
    page = console.get("/admin/regions/region/").content.decode()
    assert 'title="2 of 4"' in page and "</span></span> 2/4" in page  # cn-beijing: 2 live nodes of 4
    assert "</span></span> 1/100" in page  # cn-shanghai
    assert "unavailable: engine did not answer" in page


def test_region_edit_goes_through_region_update(console, operator, regions):
    beijing = regions[0]
    form = {"name": "Beijing 2", "city": "Beijing", "country": "CN", "operator": "ops", "max_nodes": 7}
    form |= {"cpu_capacity": 2.0, "memory_capacity_mb": 4096, "warm_nodes": 0}
    resp = console.post(f"/admin/regions/region/{beijing.pk}/change/", form)
    assert resp.status_code == 302, resp.content[:3000]
    region = Region.objects.get(pk=beijing.pk)
    assert (region.name, region.max_nodes, region.operator) == ("Beijing 2", 7, "ops")
    event = last_event("region.update")
    assert event.actor_id == operator.pk
    assert event.data["max_nodes"] == 7 and event.data["before"]["max_nodes"] == 100


def test_reconcile_now_is_audited_and_queued_on_the_region(console, operator, regions, sent):
    act(console, "regions/region", "reconcile_now", [regions[2].pk])
    assert sent == [(tasks.reconcile_region.name, ("cn-shenzhen",), "region.cn-shenzhen")]
    event = last_event("region.reconcile")
    assert event.object_id == "cn-shenzhen" and event.actor_id == operator.pk


def test_node_restart_goes_to_the_regions_worker_and_is_audited(console, operator, running_app, sent):
    nodes = list(running_app.nodes.order_by("region__code"))
    before = AuditEvent.objects.filter(action="node.restart").count()
    page = act(console, "chainapps/ledgernode", "restart", [n.pk for n in nodes])
    assert "Restart of 2 node(s) queued" in page
    assert sorted(sent) == sorted((tasks.node_restart.name, (str(n.pk),), n.region.queue) for n in nodes)
    events = AuditEvent.objects.filter(action="node.restart").order_by("sequence")
    assert events.count() == before + 2
    assert {e.object_id for e in events} == {str(n.pk) for n in nodes}
    assert all(e.actor_id == operator.pk and e.tenant_id == running_app.tenant_id for e in events)

    # A removed node is not restarted (and nothing is audited for it).
    sent.clear()
    LedgerNode.objects.filter(pk=nodes[0].pk).update(state=LedgerNode.State.REMOVED)
    page = act(console, "chainapps/ledgernode", "restart", [nodes[0].pk])
    assert "Restart of 0 node(s) queued" in page and "1 removed or not-running node(s) skipped" in page
    assert sent == [] and AuditEvent.objects.filter(action="node.restart").count() == before + 2


@pytest.mark.parametrize(
    ("action", "kind", "desired", "status"),
    [
        ("stop", "stop", "stopped", "stopping"),
        ("delete_app", "delete", "deleted", "deleting"),
    ],
)
def test_app_lifecycle_actions_start_operations(console, operator, running_app, action, kind, desired, status):
    page = act(console, "chainapps/chainapp", action, [running_app.pk])
    assert "of 1 app(s) started" in page
    app = ChainApp.objects.get(pk=running_app.pk)  # still there: a delete is an operation, not a row deletion
    assert (app.desired_state, app.status) == (desired, status)
    op = Operation.objects.filter(app=app, kind=kind).get()
    assert op.status == Operation.Status.PENDING and op.created_by_id == operator.pk
    event = last_event(f"app.{kind}")
    assert event.object_id == str(app.pk) and event.data["operation"] == str(op.pk) and event.actor_id == operator.pk
    assert LedgerNode.objects.filter(app=app).count() == 2


def test_app_start_after_stop_and_refusals_shown(console, running_app):
    from tests.api.conftest import finish_open_operations

    act(console, "chainapps/chainapp", "stop", [running_app.pk])
    # Still stopping: a start is refused with the service's reason, and nothing changes.
    ops = Operation.objects.count()
    page = act(console, "chainapps/chainapp", "start", [running_app.pk])
    assert "is still pending; wait for it to finish" in page
    assert Operation.objects.count() == ops
    finish_open_operations(running_app.pk)
    page = act(console, "chainapps/chainapp", "start", [running_app.pk])
    assert "Start of 1 app(s) started" in page
    assert ChainApp.objects.get(pk=running_app.pk).desired_state == "running"
    assert last_event("app.start").object_id == str(running_app.pk)


def test_app_quota_through_chainapp_update(console, operator, running_app):
    url = f"/admin/chainapps/chainapp/{running_app.pk}/change/"
    base = change_form_data(console, url, tps_quota=20)
    assert set(base) >= {"name", "description", "tps_quota", "storage_mb", "nodes-TOTAL_FORMS"}
    resp = console.post(url, base)
    assert resp.status_code == 302, resp.content[:3000]
    assert ChainApp.objects.get(pk=running_app.pk).tps_quota == 20
    event = last_event("app.update")
    assert event.data == {"tps_quota": 20, "tps_quota_before": 10} and event.actor_id == operator.pk

    # Beyond the tenant's max_tps: refused with the service's words, nothing saved.
    audits = AuditEvent.objects.count()
    resp = console.post(url, {**base, "tps_quota": 10_000}, follow=True)
    assert "Not saved: Tenant quota exceeded" in resp.content.decode()
    assert ChainApp.objects.get(pk=running_app.pk).tps_quota == 20
    assert AuditEvent.objects.count() == audits


def test_operation_cancel_is_audited(console, operator, owner, regions):
    from tests.api.conftest import make_app

    pending = Operation.objects.get(app=make_app(owner, "x"))
    page = act(console, "chainapps/operation", "cancel", [pending.pk])
    assert "1 operation(s) cancelled" in page
    assert Operation.objects.get(pk=pending.pk).status == Operation.Status.CANCELLED
    event = last_event("operation.cancel")
    assert event.object_id == str(pending.pk) and event.actor_id == operator.pk


def test_tenant_activate_deactivate(console, operator, owner, tenant_b):
    page = act(console, "tenants/tenant", "deactivate", [owner.tenant.pk])
    assert "1 tenant(s) inactive." in page
    assert Tenant.objects.get(pk=owner.tenant.pk).is_active is False
    assert Tenant.objects.get(pk=tenant_b.pk).is_active is True
    assert last_event("tenant.deactivate").actor_id == operator.pk
    act(console, "tenants/tenant", "activate", [owner.tenant.pk])
    assert Tenant.objects.get(pk=owner.tenant.pk).is_active is True
    assert last_event("tenant.activate").object_id == str(owner.tenant.pk)


def test_deactivated_tenant_token_is_refused(console, owner, owner_client):
    assert owner_client.get("/api/v1/tenant").status_code == 200
    act(console, "tenants/tenant", "deactivate", [owner.tenant.pk])
    assert owner_client.get("/api/v1/tenant").status_code == 401


def test_tenant_add_rename_and_quota_through_services(console, operator):
    form = {"slug": "initech", "name": "Initech", "kind": "enterprise", "max_apps": 3, "max_nodes": 6}
    form |= {"max_tps": 50, "max_storage_mb": 2048, "max_daily_volume_mb": 100}
    resp = console.post("/admin/tenants/tenant/add/", form)
    assert resp.status_code == 302, resp.content[:3000]
    tenant = Tenant.objects.get(slug="initech")
    assert (tenant.max_apps, tenant.max_tps) == (3, 50)
    assert last_event("tenant.create").object_id == str(tenant.pk)

    change = {**form, "name": "Initech Ltd", "max_apps": 5, "memberships-TOTAL_FORMS": "0"}
    change |= {"memberships-INITIAL_FORMS": "0"}
    resp = console.post(f"/admin/tenants/tenant/{tenant.pk}/change/", change)
    assert resp.status_code == 302, resp.content[:3000]
    tenant.refresh_from_db()
    assert (tenant.name, tenant.max_apps, tenant.slug) == ("Initech Ltd", 5, "initech")
    assert last_event("tenant.rename").data == {"name": "Initech Ltd", "before": "Initech"}
    quota = last_event("tenant.quota")
    assert quota.data == {"max_apps": 5, "before": {"max_apps": 3}} and quota.actor_id == operator.pk

    # A negative quota is a form error; nothing is saved or audited.
    audits = AuditEvent.objects.count()
    resp = console.post(f"/admin/tenants/tenant/{tenant.pk}/change/", {**change, "max_apps": -1})
    assert resp.status_code == 200 and "errornote" in resp.content.decode()
    assert Tenant.objects.get(pk=tenant.pk).max_apps == 5 and AuditEvent.objects.count() == audits


def test_token_revoke(console, operator, owner):
    token = token_issue(membership=owner, name="ci").token
    page = act(console, "tenants/apitoken", "revoke", [token.pk])
    assert "1 token(s) revoked." in page
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert last_event("token.revoke").object_id == str(token.pk)


def test_framework_register_and_deactivate(console, operator, builtin_framework):
    form = {
        "slug": "bsn-ledger-2",
        "name": builtin_framework.name,
        "version": "2.0",
        "image": "bsn/ledger:v2",
        "command": "[]",
        "port": 8080,
        "health_path": "/health",
        "default_cpus": 0.5,
        "default_memory_mb": 64,
        "default_pids": 64,
        "contract_templates": '["kv"]',
    }
    resp = console.post("/admin/chainapps/framework/add/", form)
    assert resp.status_code == 302, resp.content[:3000]
    framework = Framework.objects.get(slug="bsn-ledger-2")
    assert framework.builtin is False and framework.is_active is True
    event = last_event("framework.register")
    assert event.data == {"image": "bsn/ledger:v2", "version": "2.0"} and event.actor_id == operator.pk

    act(console, "chainapps/framework", "deactivate", [framework.pk])
    assert Framework.objects.get(pk=framework.pk).is_active is False
    assert last_event("framework.deactivate").object_id == "bsn-ledger-2"
    # Once registered, the change page edits nothing.
    detail = console.get(f"/admin/chainapps/framework/{framework.pk}/change/").content.decode()
    assert 'name="image"' not in detail and 'name="version"' not in detail


def test_staff_only(client, owner, regions, db):
    from tests.factories import UserFactory

    for url in ("/admin/", "/admin/console/", "/admin/chainapps/ledgernode/", "/admin/audit/auditevent/verify/"):
        resp = client.get(url)
        assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/"), url
    client.force_login(owner.user)  # a tenant's owner is not platform staff
    for url in ("/admin/console/", "/admin/regions/region/"):
        resp = client.get(url)
        assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/"), url
    resp = client.post("/admin/regions/region/", {"action": "drain", "_selected_action": [str(regions[0].pk)]})
    assert resp.status_code == 302 and Region.objects.get(pk=regions[0].pk).status == "active"
    staff_without_rights = UserFactory(username="intern", is_staff=True)
    client.force_login(staff_without_rights)
    assert client.get("/admin/regions/region/").status_code == 403


def test_actions_need_the_csrf_token(operator, regions):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    action = {"action": "drain", "_selected_action": [str(regions[0].pk)]}
    assert browser.post("/admin/regions/region/", action).status_code == 403
    assert Region.objects.get(pk=regions[0].pk).status == "active"
    assert not AuditEvent.objects.filter(action="region.draining").exists()
    browser.get("/admin/regions/region/")  # the page sets the CSRF cookie; a form posts its token
    token = browser.cookies["csrftoken"].value
    assert browser.post("/admin/regions/region/", {**action, "csrfmiddlewaretoken": token}).status_code == 302
    assert Region.objects.get(pk=regions[0].pk).status == "draining"

"""The portal's chain-app pages: the list, the create form, start / stop / delete with their
confirmation — as a member uses them, and as another tenant, a viewer, a forged form and
bad input try them (a clear page, and nothing changed)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from apps.audit.models import AuditEvent
from apps.chainapps.models import ChainApp, Operation
from apps.tenants.models import Role
from tests.api.conftest import finish_open_operations, make_app, row_counts
from tests.factories import MembershipFactory
from tests.portal.conftest import post, signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer_portal(tenant_a) -> Client:
    return signed_in(MembershipFactory(tenant=tenant_a, role=Role.VIEWER, user__username="vera"))


@pytest.fixture
def app(owner, regions) -> ChainApp:
    """Tenant A's app on one region, its provisioning finished."""
    app = make_app(owner, "ledger-a", regions=("cn-beijing",))
    finish_open_operations(app.pk)
    return ChainApp.objects.get(pk=app.pk)


@pytest.fixture
def foreign_app(outsider, regions) -> ChainApp:
    app = make_app(outsider, "globex-secret", regions=("cn-shanghai",))
    finish_open_operations(app.pk)
    return app


def _html(resp) -> str:
    return resp.content.decode()


def _form(**over) -> dict:
    return {
        "name": "shop",
        "description": "",
        "framework": "bsn-ledger",
        "contract_template": "kv",
        "contract_params": "{}",
        "regions": ["cn-beijing"],
        "tps_quota": "10",
        "storage_mb": "512",
        **over,
    }


# --------------------------------------------------------------------------- list and dashboard


def test_the_list_shows_the_tenants_apps_only(member_portal, app, foreign_app):
    resp = member_portal.get("/portal/apps/")
    html = _html(resp)
    assert resp.status_code == 200
    assert f'href="/portal/apps/{app.pk}/"' in html and "ledger-a" in html and "cn-beijing" in html
    assert "globex-secret" not in html and str(foreign_app.pk) not in html
    assert 'href="/portal/apps/" aria-current="page">Apps</a>' in html  # the navigation entry
    assert 'href="/portal/apps/new/"' in html


def test_an_empty_list_says_what_to_do_next(member_portal, viewer_portal, regions):
    assert "Create your first app" in _html(member_portal.get("/portal/apps/"))
    html = _html(viewer_portal.get("/portal/apps/"))
    assert "No chain apps yet" in html and "ask a developer" in html and "/portal/apps/new/" not in html


def test_the_dashboard_links_to_the_app_and_the_create_form(member_portal, app, regions):
    html = _html(member_portal.get("/portal/"))
    assert f'href="/portal/apps/{app.pk}/"' in html
    op = Operation.objects.filter(app=app).first()
    assert f'href="/portal/operations/{op.pk}/"' in html
    ChainApp.objects.filter(pk=app.pk).update(deleted_at="2026-01-01T00:00:00Z")
    assert 'href="/portal/apps/new/"' in _html(member_portal.get("/portal/"))


# --------------------------------------------------------------------------- create


def test_the_form_offers_frameworks_templates_and_regions_with_their_free_capacity(member_portal, app, regions):
    from apps.regions.models import Region

    Region.objects.filter(code="cn-shanghai").update(max_nodes=3)
    Region.objects.filter(code="cn-shenzhen").update(status=Region.Status.DRAINING)
    resp = member_portal.get("/portal/apps/new/")
    html = _html(resp)
    assert resp.status_code == 200
    assert '<option value="bsn-ledger" selected>' in html
    for template in ("kv", "notary", "asset", "trade_finance"):
        assert f'name="contract_template" value="{template}"' in html
    assert 'value="dcep"' not in html  # reserved for the platform's own tenant
    assert "3 of 3 nodes free" in html  # cn-shanghai: empty, capacity 3
    assert "99 of 100 nodes free" in html  # cn-beijing holds ledger-a's node
    assert re.search(r'value="cn-shenzhen"\s+disabled', html) and "draining, not accepting nodes" in html
    for field in ("name", "description", "framework", "contract_params", "tps_quota", "storage_mb"):
        assert f'<label for="id_{field}"' in html  # every input has a label


def test_creating_an_app_leads_to_its_operation_page(member, member_portal, regions):
    resp = post(member_portal, "/portal/apps/new/", _form(regions=["cn-beijing", "cn-shanghai"], tps_quota="20"))
    assert resp.status_code == 302, _html(resp)[:2000]
    app = ChainApp.objects.get(name="shop")
    operation = Operation.objects.get(app=app)
    assert resp["Location"] == f"/portal/operations/{operation.pk}/"
    assert operation.kind == "provision" and operation.created_by == member.user
    assert app.tenant == member.tenant and app.tps_quota == 20 and app.storage_mb == 512
    assert sorted(app.nodes.values_list("region__code", flat=True)) == ["cn-beijing", "cn-shanghai"]
    event = AuditEvent.objects.get(action="app.create")
    assert event.actor == member.user and event.object_id == str(app.pk)
    page = member_portal.get(resp["Location"])
    assert page.status_code == 200 and "is being created" in _html(page)


def test_contract_params_reach_the_service(member_portal, regions):
    form = _form(name="points", contract_template="asset", contract_params='{"issuer": "bank"}')
    assert post(member_portal, "/portal/apps/new/", form).status_code == 302
    app = ChainApp.objects.get(name="points")
    assert app.contract_template == "asset" and app.contract_params == {"issuer": "bank"}


@pytest.mark.parametrize(
    ("over", "field", "message"),
    [
        ({"name": "no spaces allowed"}, "name", "1–63 letters"),
        ({"regions": []}, "regions", "at least 1"),
        ({"tps_quota": "0"}, "tps_quota", "greater than or equal to 1"),
        ({"storage_mb": "lots"}, "storage_mb", "valid integer"),
        ({"contract_template": "nope"}, "contract_template", "not a valid choice"),
        ({"contract_params": "{issuer: bank"}, "contract_params", "not valid JSON"),
        ({"contract_params": "[1]"}, "contract_params", "Expected a dictionary"),
        ({"contract_params": "[" * 100_000}, "contract_params", "nested too deeply"),
        # the service's own checks (a node would refuse these params; an unknown region)
        ({"contract_template": "asset", "contract_params": '{"owner": "x"}'}, "contract_params", "unknown owner"),
        ({"regions": ["cn-atlantis"]}, "regions", "unknown region(s): cn-atlantis"),
        ({"contract_template": "dcep", "contract_params": '{"central_bank": "pboc"}'}, "contract_template", "reserved"),
    ],
)
def test_bad_input_shows_the_form_again_with_the_message_and_changes_nothing(
    member_portal, regions, over, field, message
):
    before = row_counts()
    resp = post(member_portal, "/portal/apps/new/", _form(**over))
    html = _html(resp)
    assert resp.status_code == 400, html[:2000]
    assert message in html, html
    assert "The app was not created" in html
    assert 'name="name" value="{}"'.format(over.get("name", "shop")) in html  # the input is kept
    assert row_counts() == before


def test_a_quota_or_capacity_refusal_is_shown_on_the_form(member_portal, tenant_a, regions, app):
    from apps.regions.models import Region

    before = row_counts()
    Region.objects.filter(code="cn-beijing").update(max_nodes=1)  # ledger-a holds its only slot
    resp = post(member_portal, "/portal/apps/new/", _form())
    assert resp.status_code == 409 and "Region full: cn-beijing" in _html(resp)
    tenant_a.max_apps = 1
    tenant_a.save()
    resp = post(member_portal, "/portal/apps/new/", _form(regions=["cn-shanghai"]))
    assert resp.status_code == 409 and "Tenant quota exceeded: apps 1/1" in _html(resp)
    resp = post(member_portal, "/portal/apps/new/", _form(name="ledger-a", regions=["cn-shanghai"]))
    assert resp.status_code == 409
    assert row_counts() == before


def test_a_viewer_cannot_open_or_send_the_form(viewer_portal, regions):
    before = row_counts()
    assert viewer_portal.get("/portal/apps/new/").status_code == 403
    resp = post(viewer_portal, "/portal/apps/new/", _form())
    assert resp.status_code == 403 and "this needs developer" in _html(resp)
    assert row_counts() == before


def test_a_form_without_its_csrf_token_is_refused(member_portal, regions):
    before = row_counts()
    resp = member_portal.post("/portal/apps/new/", _form())
    assert resp.status_code == 403
    assert row_counts() == before


def test_a_stranger_is_sent_to_sign_in(regions):
    client = Client(enforce_csrf_checks=True)
    resp = client.get("/portal/apps/new/")
    assert resp.status_code == 302 and resp["Location"].startswith("/portal/login/")


# --------------------------------------------------------------------------- start / stop / delete


def test_stop_then_start_through_the_confirmation_pages(member, member_portal, app):
    page = member_portal.get(f"/portal/apps/{app.pk}/stop/")
    assert page.status_code == 200 and "Stop ledger-a?" in _html(page)
    resp = post(member_portal, f"/portal/apps/{app.pk}/stop/")
    stop = Operation.objects.get(app=app, kind="stop")
    assert resp.status_code == 302 and resp["Location"] == f"/portal/operations/{stop.pk}/"
    assert ChainApp.objects.get(pk=app.pk).desired_state == "stopped"
    assert AuditEvent.objects.filter(action="app.stop", actor=member.user, object_id=str(app.pk)).exists()

    # while the stop is open, a start is refused with the service's reason; nothing changes
    before = row_counts()
    resp = post(member_portal, f"/portal/apps/{app.pk}/start/")
    assert resp.status_code == 409 and "still pending; wait for it to finish" in _html(resp)
    assert row_counts() == before

    finish_open_operations(app.pk)
    resp = post(member_portal, f"/portal/apps/{app.pk}/start/")
    start = Operation.objects.get(app=app, kind="start")
    assert resp["Location"] == f"/portal/operations/{start.pk}/"
    assert ChainApp.objects.get(pk=app.pk).desired_state == "running"


def test_delete_asks_for_the_apps_name(member, member_portal, app):
    page = _html(member_portal.get(f"/portal/apps/{app.pk}/delete/"))
    assert "Type the app's name" in page and 'for="id_confirm_name"' in page
    before = row_counts()
    resp = post(member_portal, f"/portal/apps/{app.pk}/delete/", {"confirm_name": "ledger-b", "keep_data": "on"})
    assert resp.status_code == 400 and "type the app&#x27;s name, ledger-a, exactly" in _html(resp)
    assert row_counts() == before and ChainApp.objects.get(pk=app.pk).desired_state == "running"

    resp = post(member_portal, f"/portal/apps/{app.pk}/delete/", {"confirm_name": "ledger-a"})
    delete = Operation.objects.get(app=app, kind="delete")
    assert resp["Location"] == f"/portal/operations/{delete.pk}/"
    assert delete.params == {"keep_data": False}  # the box was left unticked
    app.refresh_from_db()
    assert app.desired_state == "deleted" and app.deleted_at is not None
    assert AuditEvent.objects.filter(action="app.delete", actor=member.user).exists()
    # a deleted app is not in the list; its page says so and offers no actions
    assert "Delete of ledger-a requested" in _html(member_portal.get(resp["Location"]))
    assert "ledger-a" not in _html(member_portal.get("/portal/apps/"))
    html = _html(member_portal.get(f"/portal/apps/{app.pk}/"))
    assert "This app was deleted" in html and "/delete/" not in html


@pytest.mark.parametrize("action", ["start", "stop", "delete"])
def test_another_tenants_app_is_not_found_and_untouched(member_portal, foreign_app, action):
    before = row_counts()
    url = f"/portal/apps/{foreign_app.pk}/{action}/"
    assert member_portal.get(url).status_code == 404
    resp = post(member_portal, url, {"confirm_name": foreign_app.name})
    assert resp.status_code == 404 and "belongs to another tenant" in _html(resp)
    assert row_counts() == before
    assert ChainApp.objects.get(pk=foreign_app.pk).desired_state == "running"


@pytest.mark.parametrize("action", ["start", "stop", "delete"])
def test_a_viewer_cannot_start_stop_or_delete(viewer_portal, app, action):
    before = row_counts()
    url = f"/portal/apps/{app.pk}/{action}/"
    assert viewer_portal.get(url).status_code == 403
    assert post(viewer_portal, url, {"confirm_name": app.name}).status_code == 403
    assert row_counts() == before


@pytest.mark.parametrize("action", ["stop", "delete"])
def test_lifecycle_posts_need_the_csrf_token(member_portal, app, action):
    before = row_counts()
    resp = member_portal.post(f"/portal/apps/{app.pk}/{action}/", {"confirm_name": app.name})
    assert resp.status_code == 403
    assert row_counts() == before and ChainApp.objects.get(pk=app.pk).desired_state == "running"


def test_the_list_costs_the_same_queries_for_one_app_or_five(member_portal, owner, regions):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert member_portal.get("/portal/apps/").status_code == 200
        return len(ctx.captured_queries)

    make_app(owner, "one", regions=("cn-beijing", "cn-shanghai"))
    first = queries()
    for i in range(4):
        make_app(owner, f"more-{i}", regions=("cn-shenzhen",))
    assert queries() == first


def test_a_deleted_apps_confirmation_pages_offer_nothing(member_portal, app):
    from apps.chainapps.services import chainapp_delete

    chainapp_delete(app=app, actor=None)
    before = row_counts()
    for action in ("start", "stop", "delete"):
        html = _html(member_portal.get(f"/portal/apps/{app.pk}/{action}/"))
        assert "This app is deleted" in html and '<form method="post" action="/portal/apps/' not in html
    resp = post(member_portal, f"/portal/apps/{app.pk}/start/")
    assert resp.status_code == 409 and "This app is deleted." in _html(resp)
    assert row_counts() == before

"""Upgrade, scale and cancel from the portal (apps/portal/views/changes.py): a member uses the
confirmation pages and the API's services run (audited); another tenant, a viewer, a form
without its CSRF token and bad input get a clear page and nothing changes."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.audit.models import AuditEvent
from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.tenants.models import Role
from tests.api.conftest import finish_open_operations, make_app, row_counts
from tests.factories import MembershipFactory
from tests.portal.conftest import post, signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer_portal(tenant_a) -> Client:
    return signed_in(MembershipFactory(tenant=tenant_a, role=Role.VIEWER, user__username="vera"))


@pytest.fixture
def next_version(builtin_framework) -> Framework:
    """The next version of the built-in ledger (same family: same name)."""
    return Framework.objects.create(
        slug="bsn-ledger-next",
        name=builtin_framework.name,
        version="0.3.0",
        image=builtin_framework.image,
        contract_templates=["kv", "notary"],
    )


def _running(app: ChainApp) -> ChainApp:
    finish_open_operations(app.pk)
    ChainApp.objects.filter(pk=app.pk).update(status=ChainApp.Status.RUNNING)
    app.nodes.update(state=LedgerNode.State.RUNNING)
    return ChainApp.objects.get(pk=app.pk)


@pytest.fixture
def app(owner, regions) -> ChainApp:
    return _running(make_app(owner, "ledger-a", regions=("cn-beijing", "cn-shanghai")))


@pytest.fixture
def foreign_app(outsider, regions) -> ChainApp:
    return _running(make_app(outsider, "globex-secret", regions=("cn-shanghai",)))


def _html(resp) -> str:
    return resp.content.decode()


def _regions(app) -> list[str]:
    return sorted(app.nodes.exclude(state=LedgerNode.State.REMOVED).values_list("region__code", flat=True))


# --------------------------------------------------------------------------- the app page links them


def test_the_app_page_offers_upgrade_and_regions_to_a_developer_only(member_portal, viewer_portal, app):
    html = _html(member_portal.get(f"/portal/apps/{app.pk}/"))
    assert f'href="/portal/apps/{app.pk}/upgrade/"' in html and f'href="/portal/apps/{app.pk}/scale/"' in html
    html = _html(viewer_portal.get(f"/portal/apps/{app.pk}/"))
    assert "/upgrade/" not in html and "/scale/" not in html


# --------------------------------------------------------------------------- upgrade


def test_upgrade_through_its_confirmation_page(member, member_portal, app, next_version):
    page = _html(member_portal.get(f"/portal/apps/{app.pk}/upgrade/"))
    assert "Upgrade ledger-a?" in page and 'for="id_framework"' in page and 'value="bsn-ledger-next"' in page
    resp = post(member_portal, f"/portal/apps/{app.pk}/upgrade/", {"framework": "bsn-ledger-next"})
    op = Operation.objects.get(app=app, kind="upgrade")
    assert resp.status_code == 302 and resp["Location"] == f"/portal/operations/{op.pk}/"
    assert op.params["framework"] == "bsn-ledger-next"
    assert AuditEvent.objects.filter(action="app.upgrade", actor=member.user, object_id=str(app.pk)).exists()
    assert "Upgrade of ledger-a to bsn-ledger-next requested" in _html(member_portal.get(resp["Location"]))


def test_upgrade_with_no_other_version_says_what_to_do(member_portal, app):
    html = _html(member_portal.get(f"/portal/apps/{app.pk}/upgrade/"))
    assert "No other version of" in html and f'/portal/apps/{app.pk}/upgrade/"' not in html.split("</h1>")[1]


@pytest.mark.parametrize(
    ("framework", "status", "message"),
    [
        ("", 400, "This field may not be blank."),
        ("nope", 400, "unknown framework"),
        ("bsn-ledger", 409, "already runs bsn-ledger on every node"),
    ],
)
def test_a_refused_upgrade_shows_the_form_with_the_reason(member_portal, app, next_version, framework, status, message):
    before = row_counts()
    resp = post(member_portal, f"/portal/apps/{app.pk}/upgrade/", {"framework": framework})
    assert resp.status_code == status and message in _html(resp)
    assert 'name="framework"' in _html(resp)  # the form again
    assert row_counts() == before


# --------------------------------------------------------------------------- scale


def test_scale_through_its_form(member, member_portal, app):
    page = _html(member_portal.get(f"/portal/apps/{app.pk}/scale/"))
    assert "Regions of ledger-a" in page and "runs a node now" in page
    assert 'value="cn-beijing" checked' in page and 'value="cn-shenzhen" ' in page
    resp = post(
        member_portal, f"/portal/apps/{app.pk}/scale/", {"regions": ["cn-beijing", "cn-shenzhen"], "keep_data": "on"}
    )
    op = Operation.objects.get(app=app, kind="scale")
    assert resp.status_code == 302 and resp["Location"] == f"/portal/operations/{op.pk}/"
    assert AuditEvent.objects.filter(action="app.scale", actor=member.user, object_id=str(app.pk)).exists()
    assert "cn-shenzhen" in _regions(ChainApp.objects.get(pk=app.pk))


@pytest.mark.parametrize(
    ("wanted", "status", "message"),
    [
        ([], 400, "Ensure this field has at least 1 elements."),
        (["cn-beijing", "cn-shanghai"], 409, "already runs in exactly these regions"),
        (["cn-shenzhen"], 400, "keep at least one of the app"),
        (["cn-beijing", "mars-1"], 400, "mars-1"),
    ],
)
def test_a_refused_scale_shows_the_form_with_the_reason(member_portal, app, wanted, status, message):
    before = row_counts()
    resp = post(member_portal, f"/portal/apps/{app.pk}/scale/", {"regions": wanted, "keep_data": "on"})
    assert resp.status_code == status and message in _html(resp), _html(resp)[-3000:]
    for code in wanted:  # the user's choice is kept
        assert f'value="{code}" checked' in _html(resp) or code == "mars-1"
    assert row_counts() == before and _regions(app) == ["cn-beijing", "cn-shanghai"]


# --------------------------------------------------------------------------- cancel


def test_cancel_an_open_operation_from_its_page(member, member_portal, app):
    from apps.chainapps.services import chainapp_stop

    stop = chainapp_stop(app=app, actor=member.user)
    page = _html(member_portal.get(f"/portal/operations/{stop.pk}/"))
    assert f'href="/portal/operations/{stop.pk}/cancel/"' in page
    assert f'href="/portal/operations/{stop.pk}/cancel/"' in _html(member_portal.get(f"/portal/apps/{app.pk}/"))
    assert "Cancel the stop of ledger-a?" in _html(member_portal.get(f"/portal/operations/{stop.pk}/cancel/"))
    resp = post(member_portal, f"/portal/operations/{stop.pk}/cancel/")
    assert resp.status_code == 302 and resp["Location"] == f"/portal/operations/{stop.pk}/"
    stop.refresh_from_db()
    assert stop.status == Operation.Status.CANCELLED
    assert AuditEvent.objects.filter(action="operation.cancel", actor=member.user, object_id=str(stop.pk)).exists()
    # finished now: no cancel offered, and a second POST is refused with the reason
    assert "/cancel/" not in _html(member_portal.get(f"/portal/operations/{stop.pk}/"))
    before = row_counts()
    resp = post(member_portal, f"/portal/operations/{stop.pk}/cancel/")
    assert resp.status_code == 409 and "already cancelled" in _html(resp)
    assert row_counts() == before


def test_a_delete_cannot_be_cancelled(member, member_portal, app):
    from apps.chainapps.services import chainapp_delete

    delete = chainapp_delete(app=app, actor=member.user)
    assert "/cancel/" not in _html(member_portal.get(f"/portal/operations/{delete.pk}/"))
    resp = post(member_portal, f"/portal/operations/{delete.pk}/cancel/")
    assert resp.status_code == 409 and "A delete cannot be cancelled." in _html(resp)
    assert Operation.objects.get(pk=delete.pk).status == Operation.Status.PENDING


# --------------------------------------------------------------------------- outsiders, viewers, forged forms


def _urls(app: ChainApp, op: Operation) -> list[tuple[str, dict]]:
    return [
        (f"/portal/apps/{app.pk}/upgrade/", {"framework": "bsn-ledger-next"}),
        (f"/portal/apps/{app.pk}/scale/", {"regions": ["cn-shanghai", "cn-shenzhen"]}),
        (f"/portal/operations/{op.pk}/cancel/", {}),
    ]


def test_another_tenants_app_and_operation_are_not_found_and_untouched(
    outsider, member_portal, foreign_app, next_version
):
    from apps.chainapps.services import chainapp_stop

    op = chainapp_stop(app=foreign_app, actor=outsider.user)
    before = row_counts()
    for url, data in _urls(foreign_app, op):
        assert member_portal.get(url).status_code == 404
        resp = post(member_portal, url, data)
        assert resp.status_code == 404 and "belongs to another tenant" in _html(resp)
    assert row_counts() == before
    assert Operation.objects.get(pk=op.pk).status == Operation.Status.PENDING
    assert _regions(foreign_app) == ["cn-shanghai"]


def test_a_viewer_can_neither_open_nor_send_them(member, viewer_portal, app, next_version):
    from apps.chainapps.services import chainapp_stop

    op = chainapp_stop(app=app, actor=member.user)
    before = row_counts()
    for url, data in _urls(app, op):
        assert viewer_portal.get(url).status_code == 403
        assert post(viewer_portal, url, data).status_code == 403
    assert row_counts() == before and Operation.objects.get(pk=op.pk).status == Operation.Status.PENDING


def test_posts_without_the_csrf_token_are_refused(member, member_portal, app, next_version):
    from apps.chainapps.services import chainapp_stop

    op = chainapp_stop(app=app, actor=member.user)
    before = row_counts()
    for url, data in _urls(app, op):
        assert member_portal.post(url, data).status_code == 403
    assert row_counts() == before and Operation.objects.get(pk=op.pk).status == Operation.Status.PENDING

"""The operation page (live with htmx while open, 286 once finished) and an app's operations."""

from __future__ import annotations

import pytest
from django.utils import timezone

from apps.chainapps.models import ChainApp, Operation
from tests.api.conftest import finish_open_operations, make_app, row_counts

pytestmark = pytest.mark.django_db


@pytest.fixture
def app(owner, regions) -> ChainApp:
    return make_app(owner, "ledger-a", regions=("cn-beijing", "cn-shanghai"))


def _html(resp) -> str:
    return resp.content.decode()


def test_an_open_operation_polls_its_status_every_two_seconds(member_portal, app):
    op = Operation.objects.get(app=app)
    node_ids = list(app.nodes.values_list("pk", flat=True))
    Operation.objects.filter(pk=op.pk).update(
        status=Operation.Status.RUNNING,
        attempts=1,
        steps={str(node_ids[0]): {"state": "done", "error": ""}, str(node_ids[1]): {"state": "pending", "error": ""}},
        log=[*op.log, Operation.log_line("node in cn-beijing healthy", detail="engine at tcp://10.0.0.7:2376")],
    )
    resp = member_portal.get(f"/portal/operations/{op.pk}/")
    html = _html(resp)
    assert resp.status_code == 200
    assert "Provision of ledger-a" in html and ">running</span>" in html and "1 of 5" in html
    assert f'hx-get="/portal/operations/{op.pk}/status/"' in html and 'hx-trigger="every 2s"' in html
    assert "provision requested" in html and "node in cn-beijing healthy" in html
    assert "10.0.0.7" not in html  # internal detail is for platform staff, as in the API
    assert "cn-beijing" in html and "cn-shanghai" in html and ">done</span>" in html and ">pending</span>" in html

    fragment = member_portal.get(f"/portal/operations/{op.pk}/status/", HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200 and 'hx-trigger="every 2s"' in _html(fragment)
    assert "<html" not in _html(fragment)  # a fragment, swapped into the page


def test_a_finished_operation_stops_the_polling_with_286(member_portal, app):
    op = Operation.objects.get(app=app)
    Operation.objects.filter(pk=op.pk).update(
        status=Operation.Status.FAILED, last_error="region cn-shanghai did not answer", finished_at=timezone.now()
    )
    fragment = member_portal.get(f"/portal/operations/{op.pk}/status/", HTTP_HX_REQUEST="true")
    html = _html(fragment)
    assert fragment.status_code == 286  # htmx: "stop polling"
    assert "hx-trigger" not in html and ">failed</span>" in html and "region cn-shanghai did not answer" in html
    assert f'href="/portal/apps/{app.pk}/"' in html  # what to do next
    page = member_portal.get(f"/portal/operations/{op.pk}/")
    assert page.status_code == 200 and "hx-trigger" not in _html(page)


def test_the_apps_operations_list(member_portal, app):
    finish_open_operations(app.pk)
    from apps.chainapps.services import chainapp_stop

    stop = chainapp_stop(app=app, actor=app.tenant.memberships.first().user)
    html = _html(member_portal.get(f"/portal/apps/{app.pk}/operations/"))
    assert f'href="/portal/operations/{stop.pk}/">stop<' in html and ">provision<" in html
    assert html.index(">stop<") < html.index(">provision<")  # newest first


def test_another_tenants_operation_is_not_found(outsider_portal, app):
    op = Operation.objects.get(app=app)
    before = row_counts()
    for url in (f"/portal/operations/{op.pk}/", f"/portal/operations/{op.pk}/status/"):
        resp = outsider_portal.get(url)
        assert resp.status_code == 404 and "ledger-a" not in _html(resp)
    assert row_counts() == before


def test_a_viewer_follows_operations(tenant_a, app):
    from apps.tenants.models import Role
    from tests.factories import MembershipFactory
    from tests.portal.conftest import signed_in

    viewer = signed_in(MembershipFactory(tenant=tenant_a, role=Role.VIEWER, user__username="vera"))
    op = Operation.objects.get(app=app)
    assert viewer.get(f"/portal/operations/{op.pk}/").status_code == 200
    html = _html(viewer.get(f"/portal/apps/{app.pk}/"))
    assert "Delete…" not in html and "/stop/" not in html  # no actions offered to a viewer

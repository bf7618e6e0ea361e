"""The operator's Django admin for apps, nodes, operations and regions: node health
renders, actions only queue work for the regions' workers (the web process never calls an
engine), cancelling goes through the same service as the API."""

from __future__ import annotations

import pytest

from apps.chainapps import tasks
from apps.chainapps.models import LedgerNode, Operation
from tests.api.conftest import finish_open_operations, make_app


@pytest.fixture
def sent(monkeypatch):
    """Celery sends, recorded instead of made: (task name, args, queue)."""
    calls = []
    for task in (tasks.node_restart, tasks.reconcile_region):
        monkeypatch.setattr(
            task, "apply_async", lambda args, queue=None, task=task, **kw: calls.append((task.name, args, queue))
        )
    return calls


@pytest.mark.django_db
class TestOperatorAdmin:
    def test_pages_render_with_node_health(self, admin_client, owner, regions):
        app = make_app(owner, "shown", regions=("cn-beijing", "cn-shanghai"))
        node = app.nodes.first()
        LedgerNode.objects.filter(pk=node.pk).update(state="unhealthy", chain_height=301, last_error="no answer")
        for url in (
            "/admin/chainapps/chainapp/",
            f"/admin/chainapps/chainapp/{app.pk}/change/",
            "/admin/chainapps/ledgernode/",
            f"/admin/chainapps/ledgernode/{node.pk}/change/",
            "/admin/chainapps/operation/",
            "/admin/regions/region/",
        ):
            assert admin_client.get(url).status_code == 200, url
        page = admin_client.get("/admin/chainapps/ledgernode/").content.decode()
        assert "unhealthy" in page and "301" in page and "no answer" in page
        assert "private_key" not in admin_client.get(f"/admin/chainapps/ledgernode/{node.pk}/change/").content.decode()

    def test_restart_and_reconcile_now_queue_work_on_the_regions(self, admin_client, owner, regions, sent):
        app = make_app(owner, "a", regions=("cn-beijing", "cn-shanghai"))
        nodes = list(app.nodes.order_by("region__code"))
        resp = admin_client.post(
            "/admin/chainapps/ledgernode/",
            {"action": "restart", "_selected_action": [str(n.pk) for n in nodes]},
            follow=True,
        )
        assert resp.status_code == 200 and "Restart of 2 node(s) queued" in resp.content.decode()
        assert sorted(sent) == sorted((tasks.node_restart.name, (str(n.pk),), n.region.queue) for n in nodes)
        sent.clear()
        admin_client.post("/admin/chainapps/chainapp/", {"action": "reconcile_now", "_selected_action": [str(app.pk)]})
        assert sorted(q for _, _, q in sent) == ["region.cn-beijing", "region.cn-shanghai"]
        sent.clear()
        action = {"action": "reconcile_now", "_selected_action": [str(regions[2].pk)]}
        admin_client.post("/admin/regions/region/", action)
        assert sent == [(tasks.reconcile_region.name, ("cn-shenzhen",), "region.cn-shenzhen")]

    def test_cancel_from_the_admin(self, admin_client, owner, regions):
        pending = Operation.objects.get(app=make_app(owner, "a"))
        done_app = make_app(owner, "b")
        finish_open_operations(done_app.pk)
        finished = Operation.objects.get(app=done_app)
        resp = admin_client.post(
            "/admin/chainapps/operation/",
            {"action": "cancel", "_selected_action": [str(pending.pk), str(finished.pk)]},
            follow=True,
        )
        body = resp.content.decode()
        assert "1 operation(s) cancelled" in body and "Not cancelled" in body
        pending.refresh_from_db()
        assert pending.status == Operation.Status.CANCELLED

    def test_staff_only(self, client, owner, regions):
        make_app(owner, "a")
        assert client.get("/admin/chainapps/ledgernode/").status_code == 302  # to the login page

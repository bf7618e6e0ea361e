"""The attack of issue 8 §1, on a real node (process driver, real worker): a process binds
a stopped node's port and answers like a node — forged state, every transaction
"committed". Nothing it says reaches the tenant, the node is never `running` on its
word, and once the reconciler has moved the real node the tenant gets real answers again.
"""

from __future__ import annotations

import pytest

from apps.chainapps.models import ChainApp, LedgerNode
from apps.chainapps.provisioning import node_spec
from apps.chainapps.reconcile import reconcile_node, reconcile_region
from apps.runtime.drivers import driver_for_region
from bsn.client import Client, generate_key
from tests.api.conftest import assert_problem
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.fakenode import FakeNode
from tests.integration.conftest import operation_done, wait_for

pytestmark = pytest.mark.integration


def test_a_stub_on_a_stopped_nodes_port_gets_nothing_through(make_regions, worker_factory):
    (region,) = make_regions("process", count=1)
    worker_factory([region])
    api = _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))
    resp = api.post("/api/v1/apps", {"name": "squatted", "regions": [region.code]}, format="json")
    app_id = resp.json()["app"]
    assert operation_done(api, resp["Location"])["status"] == "succeeded"
    private, public = generate_key()
    resp = api.post(f"/api/v1/apps/{app_id}/users", {"name": "alice", "public_key": public}, format="json")
    assert resp.status_code == 201, resp.content
    signer = Client("http://unused", "-", app_id, "alice", private)
    real = signer.sign("kv", "put", {"key": "greeting", "value": "real"})
    assert api.post(f"/api/v1/apps/{app_id}/transactions", real, format="json").json()["status"] == "committed"

    # The node dies behind the control plane's back; the row still says running.
    node = LedgerNode.objects.select_related("app__framework", "app__tenant", "region").get(app_id=app_id)
    assert node.state == LedgerNode.State.RUNNING
    driver_for_region(region).stop_node(node_spec(node, configured=False))
    port = int(node.endpoint.rsplit(":", 1)[1])

    def forge(method, path, body):
        if path.startswith("/state/"):
            return 200, {"contract": "kv", "key": "greeting", "value": "forged"}
        if path == "/tx":
            return 200, {"tx_id": "f" * 64, "status": "committed", "height": 9, "index": 0, "events": []}
        return 200, {"status": "ok", "node_id": str(node.pk), "app_id": app_id, "height": 9, "ordering": "solo"}

    stub = FakeNode(forge, port=port)  # answers anyone, as a squatter would
    try:
        resp = api.get(f"/api/v1/apps/{app_id}/state/kv/greeting")
        assert_problem(resp, 503, "no-healthy-node")
        assert b"forged" not in resp.content
        assert [path for _, path, _ in stub.requests] == ["/state/kv/greeting"]  # it was asked, not believed
        # The gateway asked the region's worker to look again: the node is not running.
        wait_for(
            lambda: LedgerNode.objects.get(pk=node.pk).state != LedgerNode.State.RUNNING,
            timeout=30,
            message="the worker's refresh of the node",
        )

        LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.RUNNING)  # as before the refresh
        unsigned = {"tx": {**real["tx"], "nonce": "n-forged", "args": {"key": "greeting", "value": "x"}}, "sig": "AA=="}
        resp = api.post(f"/api/v1/apps/{app_id}/transactions", unsigned, format="json")
        assert_problem(resp, 503, "no-healthy-node")
        assert b"committed" not in resp.content
        assert [path for _, path, _ in stub.requests] == ["/state/kv/greeting", "/tx"]

        # The stub's 200 on /health is no proof of anything.
        LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.RUNNING)
        assert reconcile_node(str(node.pk)) != LedgerNode.State.RUNNING
        reconcile_region(region.code, repair=False)
        assert LedgerNode.objects.get(pk=node.pk).state != LedgerNode.State.RUNNING
        assert ChainApp.objects.get(pk=app_id).status != ChainApp.Status.RUNNING

        # Repair: the real node starts again elsewhere (its port is taken), proves itself, serves the truth.
        def healed():
            reconcile_region(region.code)
            row = LedgerNode.objects.get(pk=node.pk)
            return row.state == LedgerNode.State.RUNNING and row.endpoint != node.endpoint

        wait_for(healed, timeout=60, interval=0.5, message="the real node running again on another port")
        assert api.get(f"/api/v1/apps/{app_id}/state/kv/greeting").json()["value"] == "real"
        assert_problem(api.post(f"/api/v1/apps/{app_id}/transactions", unsigned, format="json"), 400, "bad_signature")
    finally:
        stub.close()
    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    assert operation_done(api, resp["Location"])["status"] == "succeeded"

"""End to end through the REST API, a real Celery worker and a real runtime (Docker or processes)."""

from __future__ import annotations

import socket

import pytest
import requests

from apps.chainapps.models import ChainApp, LedgerNode, Operation
from apps.runtime.spec import LABEL_APP
from bsn.client import Client, generate_key
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import assert_no_secret_in_any_environment, node_get, operation_done, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def api(transactional_db):
    return _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))


def _objects_with_app_label(engine, app_id: str) -> dict[str, int]:
    selector = {"label": f"{LABEL_APP}={app_id}"}
    return {
        "containers": len(engine.containers.list(all=True, filters=selector)),
        "networks": len(engine.networks.list(filters=selector)),
        "volumes": len(engine.volumes.list(filters=selector)),
    }


def _lifecycle(api, regions, *, engine=None) -> None:
    codes = [r.code for r in regions]
    resp = api.post("/api/v1/apps", {"name": "ledger-e2e", "regions": codes}, format="json")
    assert resp.status_code == 202, resp.content
    app_id = resp.json()["app"]
    op = operation_done(api, resp["Location"])
    assert op["status"] == "succeeded", op
    app = api.get(f"/api/v1/apps/{app_id}").json()
    assert app["status"] == "running"

    nodes = api.get(f"/api/v1/apps/{app_id}/nodes").json()["results"]
    assert sorted(n["region"] for n in nodes) == sorted(codes)
    rows = {str(n.pk): n for n in LedgerNode.objects.filter(app_id=app_id)}
    for node in nodes:
        assert node["state"] == "running"
        assert "endpoint" not in node  # operator information, not the tenant's
        endpoint = rows[node["id"]].endpoint
        assert endpoint.startswith("http://127.0.0.1:")
        assert requests.get(endpoint + "/health", timeout=5).json() == {"status": "ok"}  # a stranger's view
        assert requests.get(endpoint + "/chain", timeout=5).status_code == 401
        assert node_get(rows[node["id"]], "/health").body["node_id"] == node["id"]
    # Secrets reached the nodes as files: no environment shows any of them.
    assert assert_no_secret_in_any_environment(engine) >= len(codes)
    first = rows[nodes[0]["id"]].endpoint
    # Writes are signed transactions of a registered app user, through the gateway.
    private, public = generate_key()
    resp = api.post(f"/api/v1/apps/{app_id}/users", {"name": "alice", "public_key": public}, format="json")
    assert resp.status_code == 201, resp.content
    signer = Client("http://unused", "-", app_id, "alice", private)  # signs only; the API client sends
    envelope = signer.sign("kv", "put", {"key": "greeting", "value": "ni hao"})
    resp = api.post(f"/api/v1/apps/{app_id}/transactions", envelope, format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["status"] == "committed"

    # stop: nodes stop answering
    resp = api.post(f"/api/v1/apps/{app_id}/stop")
    assert resp.status_code == 202
    assert operation_done(api, resp["Location"])["status"] == "succeeded"
    assert api.get(f"/api/v1/apps/{app_id}").json()["status"] == "stopped"
    with pytest.raises(requests.RequestException):
        requests.get(first + "/health", timeout=2)

    # start: the data is still there
    resp = api.post(f"/api/v1/apps/{app_id}/start")
    assert resp.status_code == 202
    assert operation_done(api, resp["Location"])["status"] == "succeeded"
    assert api.get(f"/api/v1/apps/{app_id}").json()["status"] == "running"
    restarted = {n.region.code: n.endpoint for n in LedgerNode.objects.filter(app_id=app_id).select_related("region")}
    assert node_get(rows[nodes[0]["id"]], "/state/kv/greeting").body["value"] == "ni hao"
    assert api.get(f"/api/v1/apps/{app_id}/state/greeting").json()["value"] == "ni hao"

    if engine is not None:
        assert _objects_with_app_label(engine, app_id) == {
            "containers": len(codes),
            # one per region, plus the nodes' internal peer network when there are several
            "networks": len(codes) + (len(codes) > 1),
            "volumes": len(codes),
        }

    # delete with data: nothing left behind
    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    assert resp.status_code == 202
    assert operation_done(api, resp["Location"])["status"] == "succeeded"
    assert api.get(f"/api/v1/apps/{app_id}").json()["status"] == "deleted"
    assert set(LedgerNode.objects.filter(app_id=app_id).values_list("state", flat=True)) == {"removed"}
    if engine is not None:
        assert _objects_with_app_label(engine, app_id) == {"containers": 0, "networks": 0, "volumes": 0}
    for node in restarted.values():
        with pytest.raises(requests.RequestException):
            requests.get(node + "/health", timeout=2)


@pytest.mark.docker
def test_lifecycle_on_docker(api, make_regions, worker_factory, docker_engine, ledger_image):
    regions = make_regions("docker", count=2)
    worker_factory(regions)
    _lifecycle(api, regions, engine=docker_engine)


def test_a_host_port_held_by_another_program_is_skipped(api, make_regions, worker_factory, docker_engine, ledger_image):
    with socket.socket() as holder:  # something outside bsn listens on the first port of the range
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        held = holder.getsockname()[1]
        regions = make_regions("docker", count=1)
        worker_factory(regions, env={"BSN_NODE_PORT_RANGE": f"{held}-{held + 20}"})
        resp = api.post("/api/v1/apps", {"name": "ports", "regions": [regions[0].code]}, format="json")
        assert resp.status_code == 202, resp.content
        app_id = resp.json()["app"]
        assert operation_done(api, resp["Location"], timeout=120)["status"] == "succeeded"
        node = LedgerNode.objects.get(app_id=app_id)
        assert held < node.host_port <= held + 20
        assert node.endpoint == f"http://127.0.0.1:{node.host_port}"
        assert requests.get(node.endpoint + "/health", timeout=5).json()["status"] == "ok"
    docker_engine.containers.get(node.name).restart(timeout=0)  # the endpoint stays
    wait_for(lambda: _healthy(node.endpoint), timeout=30, message="the node back on its port")
    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    assert operation_done(api, resp["Location"], timeout=120)["status"] == "succeeded"
    assert LedgerNode.objects.filter(app_id=app_id, host_port__isnull=False).count() == 0  # port released


def _healthy(endpoint: str) -> bool:
    try:
        return requests.get(endpoint + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_lifecycle_on_processes(api, make_regions, worker_factory):
    # One region: the process driver has no etcd ordering, so its apps are single-node (solo).
    regions = make_regions("process", count=1)
    worker_factory(regions)
    _lifecycle(api, regions)


@pytest.mark.docker
def test_worker_killed_while_provisioning_is_retried_without_duplicates(
    api, make_regions, worker_factory, docker_engine, ledger_image
):
    regions = make_regions("docker", count=1)
    worker = worker_factory(regions, stale_seconds=8)
    resp = api.post("/api/v1/apps", {"name": "killed", "regions": [regions[0].code]}, format="json")
    op_id, app_id = resp.json()["id"], resp.json()["app"]

    # Kill the worker while the node step is in flight (after the claim, before success).
    wait_for(
        lambda: Operation.objects.get(pk=op_id).status == "running",
        timeout=30,
        interval=0.02,
        message="the operation to start",
    )
    worker.kill()
    op = Operation.objects.get(pk=op_id)
    assert op.status == "running" and op.attempts == 1, "the operation must stay visible, not vanish"

    # A fresh worker (with beat, which resumes stale operations) finishes the job.
    worker_factory(regions, stale_seconds=8, beat=True)
    final = operation_done(api, resp["Location"], timeout=120)
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 2
    assert ChainApp.objects.get(pk=app_id).status == "running"
    assert _objects_with_app_label(docker_engine, app_id) == {"containers": 1, "networks": 1, "volumes": 1}

    api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    wait_for(lambda: _objects_with_app_label(docker_engine, app_id)["containers"] == 0, timeout=60, message="cleanup")


@pytest.mark.docker
def test_node_step_twice_creates_nothing_twice(
    api, make_regions, docker_engine, ledger_image, django_capture_on_commit_callbacks
):
    """Running the ensure step again (a redelivered message, a retry) adopts what exists."""
    from apps.chainapps import provisioning

    regions = make_regions("docker", count=1)
    with django_capture_on_commit_callbacks(execute=False):  # no worker: drive the steps by hand
        resp = api.post("/api/v1/apps", {"name": "twice", "regions": [regions[0].code]}, format="json")
    op_id, app_id = resp.json()["id"], resp.json()["app"]
    op, why = provisioning.operation_claim(op_id)
    assert op is not None, why
    node_id = next(iter(op.steps))
    try:
        assert provisioning.node_step_run(op_id, node_id) == "done"
        first = LedgerNode.objects.get(pk=node_id)
        # Pretend the outcome was lost (worker died after the container started): run again.
        Operation.objects.filter(pk=op_id).update(status="running", steps={node_id: {"state": "pending", "error": ""}})
        assert provisioning.node_step_run(op_id, node_id) == "done"
        second = LedgerNode.objects.get(pk=node_id)
        assert second.runtime_id == first.runtime_id
        assert second.endpoint == first.endpoint
        assert _objects_with_app_label(docker_engine, app_id) == {"containers": 1, "networks": 1, "volumes": 1}
    finally:
        for container in docker_engine.containers.list(all=True, filters={"label": f"{LABEL_APP}={app_id}"}):
            container.remove(force=True, v=True)
        from apps.ordering.services import ordering_detach

        for network in docker_engine.networks.list(filters={"label": f"{LABEL_APP}={app_id}"}):
            ordering_detach(network.name)  # the ordering members were attached for the node
            network.remove()
        for volume in docker_engine.volumes.list(filters={"label": f"{LABEL_APP}={app_id}"}):
            volume.remove(force=True)

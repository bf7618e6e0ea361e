"""The reconciler: restarts what died, marks an unreachable region, stops/removes per desired state."""

from __future__ import annotations

import os
import signal

import pytest
import requests

from apps.chainapps import provisioning
from apps.chainapps.models import ChainApp, LedgerNode, Operation
from apps.chainapps.reconcile import reconcile_region
from apps.regions.models import Region
from tests.conftest import _client_for
from tests.factories import MembershipFactory, RegionFactory, TenantFactory
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def _provision_by_hand(api, region, django_capture_on_commit_callbacks) -> ChainApp:
    with django_capture_on_commit_callbacks(execute=False):  # drive the steps here, no worker
        resp = api.post("/api/v1/apps", {"name": f"rec-{region.code}", "regions": [region.code]}, format="json")
    assert resp.status_code == 202, resp.content
    op, _ = provisioning.operation_claim(resp.json()["id"])
    for node_id in op.steps:
        assert provisioning.node_step_run(str(op.pk), node_id) == "done"
    return ChainApp.objects.get(pk=resp.json()["app"])


@pytest.fixture
def api(transactional_db):
    return _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))


def test_reconciler_restarts_a_dead_process_node_and_rederives_status(
    api, make_regions, django_capture_on_commit_callbacks
):
    (region,) = make_regions("process")
    app = _provision_by_hand(api, region, django_capture_on_commit_callbacks)
    node = app.nodes.get()
    assert node.state == "running"
    os.kill(int(node.runtime_id), signal.SIGKILL)
    wait_for(lambda: not _answers(node.endpoint), timeout=10, message="the node to die")

    report = reconcile_region(region.code)
    assert report["restarted"] == 1
    node.refresh_from_db()
    wait_for(lambda: _answers(node.endpoint), timeout=20, message="the restarted node to answer")
    report = reconcile_region(region.code)  # next pass observes it healthy
    assert report["restarted"] == 0
    node.refresh_from_db()
    assert node.state == "running"
    assert ChainApp.objects.get(pk=app.pk).status == "running"
    _cleanup(app)


def test_unreachable_engine_makes_region_unavailable_and_nodes_unknown(api, transactional_db):
    region = RegionFactory(code="itdead0-0", driver="docker", docker_base_url="unix:///nonexistent/docker.sock")
    tenant = TenantFactory()
    app = ChainApp.objects.create(tenant=tenant, name="x", framework_id=_framework_id(), status="running")
    node = LedgerNode.objects.create(app=app, region=region, name="bsn-x-itdead0-0", state="running")

    report = reconcile_region(region.code)
    assert "error" in report
    region.refresh_from_db()
    node.refresh_from_db()
    assert region.status == Region.Status.UNAVAILABLE
    assert node.state == "unknown", "never deleted because the engine did not answer"
    assert ChainApp.objects.get(pk=app.pk).status == "degraded", "out of sight is not running, nor failed"


def test_an_unavailable_engine_leaves_an_app_with_an_open_operation_to_it(api, transactional_db):
    region = RegionFactory(code="itdead1-0", driver="docker", docker_base_url="unix:///nonexistent/docker.sock")
    tenant = TenantFactory()
    app = ChainApp.objects.create(tenant=tenant, name="x", framework_id=_framework_id(), status="provisioning")
    LedgerNode.objects.create(app=app, region=region, name="bsn-x-itdead1-0", state="pending")
    Operation.objects.create(tenant=tenant, app=app, kind="provision", status="running")

    reconcile_region(region.code)
    assert LedgerNode.objects.get(app=app).state == "unknown"
    assert ChainApp.objects.get(pk=app.pk).status == "provisioning"


def test_a_region_back_from_unavailable_is_active_and_its_nodes_observed(api, make_regions):
    (region,) = make_regions("process")
    Region.objects.filter(pk=region.pk).update(status=Region.Status.UNAVAILABLE, last_error="engine away")
    tenant = TenantFactory()
    app = ChainApp.objects.create(tenant=tenant, name="x", framework_id=_framework_id(), status="degraded")
    node = LedgerNode.objects.create(app=app, region=region, name=f"bsn-x-{region.code}", state="unknown")

    reconcile_region(region.code, repair=False)
    region.refresh_from_db()
    node.refresh_from_db()
    assert (region.status, region.last_error) == (Region.Status.ACTIVE, "")
    assert node.state == "missing"  # observed again: the engine holds no such node


def test_reconciler_stops_nodes_of_a_stopped_app(api, make_regions, django_capture_on_commit_callbacks):
    (region,) = make_regions("process")
    app = _provision_by_hand(api, region, django_capture_on_commit_callbacks)
    ChainApp.objects.filter(pk=app.pk).update(desired_state="stopped")  # as if the stop op were lost
    report = reconcile_region(region.code)
    assert report["stopped"] == 1
    node = app.nodes.get()
    assert not _answers(node.endpoint)
    _cleanup(app)


def _answers(endpoint: str) -> bool:
    try:
        return requests.get(endpoint + "/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _framework_id():
    from apps.chainapps.models import Framework

    return Framework.objects.get(slug="bsn-ledger").pk


def _cleanup(app: ChainApp) -> None:
    from apps.runtime.drivers import driver_for_region

    for node in app.nodes.select_related("region", "app__framework", "app__tenant"):
        driver_for_region(node.region).remove_node(provisioning.node_spec(node), keep_data=False)


@pytest.mark.docker
def test_one_reconciler_collects_an_orphan_on_a_shared_engine(
    api, make_regions, django_capture_on_commit_callbacks, docker_engine, ledger_image, monkeypatch
):
    """Two regions on one engine both see a leftover of a create the database lost:
    exactly one reconciler removes it -- container, network and volume -- after the grace
    period, and never before (they raced to 409 "removal already in progress" and left
    the network and volume behind)."""
    from concurrent.futures import ThreadPoolExecutor

    import docker.errors

    from apps.chainapps import reconcile

    here, there = make_regions("docker", 2)
    app = _provision_by_hand(api, here, django_capture_on_commit_callbacks)
    node = app.nodes.get()
    name, spec = node.name, provisioning.node_spec(node)
    LedgerNode.objects.filter(pk=node.pk).delete()  # the database no longer knows it

    # Another installation's leftover on the same engine, named as ours would be: never touched.
    foreign = docker_engine.containers.create(
        ledger_image,
        name=f"{name}-foreign",
        labels={"io.bsn.managed": "true", "io.bsn.installation": "another-installation", "io.bsn.role": "ledger"},
    )
    reports = [reconcile_region(here.code), reconcile_region(there.code)]
    assert [r["orphans"] for r in reports] == [1, 0]  # seen by both, owned by one
    assert sum(r["removed"] for r in reports) == 0  # within the grace period: kept
    docker_engine.containers.get(name)

    monkeypatch.setattr(reconcile, "_orphan_due", lambda name: True)

    def reconcile_in_thread(code: str) -> dict:
        from django.db import connection

        try:
            return reconcile_region(code)
        finally:
            connection.close()  # each thread has its own connection

    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(reconcile_in_thread, [here.code, there.code]))
    assert all("error" not in r for r in reports), reports
    assert sum(r["removed"] for r in reports) == 1
    for getter, ref in (
        (docker_engine.containers.get, name),
        (docker_engine.volumes.get, spec.volume),
        (docker_engine.networks.get, spec.network),
    ):
        with pytest.raises(docker.errors.NotFound):
            getter(ref)
    foreign.reload()  # still there, untouched
    foreign.remove(force=True)


def test_an_operator_restart_stops_starts_and_verifies_the_node(api, make_regions, django_capture_on_commit_callbacks):
    """The admin's "restart" (apps.chainapps.reconcile.node_restart, run by the region's worker)."""
    from apps.chainapps.reconcile import node_restart

    (region,) = make_regions("process")
    app = _provision_by_hand(api, region, django_capture_on_commit_callbacks)
    node = app.nodes.get()
    before = node.runtime_id
    assert node_restart(str(node.pk)) == "restarted"
    node.refresh_from_db()
    assert node.runtime_id != before  # a new process
    assert node.state == "running" and node.last_error == ""
    assert _answers(node.endpoint)
    ChainApp.objects.filter(pk=app.pk).update(desired_state=ChainApp.DesiredState.STOPPED)
    assert node_restart(str(node.pk)) == "not restarted: the app is stopped"
    _cleanup(app)

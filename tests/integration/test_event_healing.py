"""Healing from engine events (apps/chainapps/healing.py): a node container killed or
removed behind the platform's back is running and verified again without a reconcile
pass (the test worker's periodic pass is an hour away); a node the platform stops on
purpose is left stopped. How fast: `make bench BENCH=healing` (median of 10)."""

from __future__ import annotations

import pytest

from apps.chainapps.models import ChainApp, LedgerNode
from apps.runtime.nodeapi import NodeCallError
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import node_get, operation_done, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@pytest.fixture
def api(transactional_db):
    return _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))


def _started_at(engine, name: str) -> str:
    return engine.containers.get(name).attrs["State"]["StartedAt"]


def _verified(node: LedgerNode, engine, before: str) -> bool:
    """Started again (a new container, or the killed one), answers as itself, and the
    database says running."""
    node.refresh_from_db()
    try:
        if _started_at(engine, node.name) == before or node.state != LedgerNode.State.RUNNING:
            return False
    except Exception:  # noqa: BLE001 - not there yet
        return False
    try:
        return node_get(node, "/health", timeout=2).body["node_id"] == str(node.pk)
    except NodeCallError:
        return False


def test_a_node_killed_or_removed_behind_the_platforms_back_comes_back_at_once(
    api, make_regions, worker_factory, docker_engine, ledger_image
):
    (region,) = make_regions("docker")
    worker_factory([region])
    resp = api.post("/api/v1/apps", {"name": "heal", "regions": [region.code]}, format="json")
    assert operation_done(api, resp["Location"], timeout=120)["status"] == "succeeded"
    app_id = resp.json()["app"]
    node = LedgerNode.objects.get(app_id=app_id)

    for how in ("remove", "kill"):
        before = _started_at(docker_engine, node.name)
        container = docker_engine.containers.get(node.name)
        container.remove(force=True) if how == "remove" else container.kill()
        wait_for(
            lambda before=before: _verified(node, docker_engine, before),
            timeout=60,
            message=f"the node to come back ({how})",
        )
        assert ChainApp.objects.get(pk=app_id).status == "running"
    region.refresh_from_db()
    assert region.last_event.endswith(f"{node.name}: healed") and region.last_event_at
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("bsn_status", stdout=out)
    assert f"last engine event {region.last_event_at:%Y-%m-%d %H:%M:%S}: {region.last_event}" in out.getvalue()

    # Stopped on purpose: the die events change nothing.
    resp = api.post(f"/api/v1/apps/{app_id}/stop")
    assert operation_done(api, resp["Location"])["status"] == "succeeded"
    node.refresh_from_db()
    assert node.state == LedgerNode.State.STOPPED
    import time

    time.sleep(3)  # events of the stop have been seen and handled by now
    assert docker_engine.containers.get(node.name).status == "exited"
    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    assert operation_done(api, resp["Location"])["status"] == "succeeded"

"""Warm nodes (docs/provisioning.md, "Warm nodes"): made ahead, claimed by a new app, refilled.

Through the REST API, a real Celery worker and the Docker engine; apps/chainapps/warm.py.
"""

from __future__ import annotations

import os

import docker.errors
import pytest
import requests
from django.utils import timezone

from apps.chainapps import warm as warm_nodes
from apps.chainapps.models import LedgerNode, WarmNode
from apps.chainapps.reconcile import reconcile_region
from apps.regions.models import Region
from apps.runtime.spec import LABEL_WARM
from bsn.client import Client, generate_key
from bsn.ledger.claim import Claim, seal
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import assert_no_secret_in_any_environment, node_get, operation_done, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@pytest.fixture
def api(transactional_db):
    return _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))


def _objects_named(engine, name: str) -> dict[str, bool]:
    def exists(collection, key: str) -> bool:
        try:
            collection.get(key)
        except docker.errors.NotFound:
            return False
        return True

    return {
        "container": exists(engine.containers, name),
        "network": bool([n for n in engine.networks.list(names=[f"{name}-net"]) if n.name == f"{name}-net"]),
        "volume": exists(engine.volumes, f"{name}-data"),
    }


def _answers(endpoint: str) -> bool:
    try:
        requests.get(endpoint + "/health", timeout=2)
    except requests.RequestException:
        return False
    return True


def _warm_region(make_regions, count: int = 1) -> Region:
    region = make_regions("docker", count=1)[0]
    Region.objects.filter(pk=region.pk).update(warm_nodes=count)
    region.refresh_from_db()
    return region


def test_a_new_app_claims_a_warm_node_and_the_region_makes_another(
    api, make_regions, worker_factory, docker_engine, ledger_image
):
    region = _warm_region(make_regions)
    report = warm_nodes.warm_fill(region.code)
    assert report["made"] == 1, report
    warm = WarmNode.objects.get(region=region)
    assert warm.state == WarmNode.State.READY and warm.host_port
    container = docker_engine.containers.get(warm.name)
    assert container.status == "running"
    assert container.labels[LABEL_WARM] == str(warm.pk) and "io.bsn.app" not in container.labels
    # Standing by, it takes only its sealed claim: a stranger on its port gets a clear 4xx.
    endpoint = f"http://127.0.0.1:{warm.host_port}"
    health = requests.get(f"{endpoint}/health", timeout=5)
    assert (health.status_code, health.json()["error"]) == (404, "standing_by")
    forged = seal(os.urandom(32), Claim(settings={"BSN_APP_ID": "mine"}, files={}))
    refused = requests.post(f"{endpoint}/claim", data=forged, timeout=5)
    assert (refused.status_code, refused.json()["error"]) == (403, "claim_refused")
    assert requests.post(f"{endpoint}/claim", data=b"x" * 100_000, timeout=5).status_code == 413
    assert warm_nodes.warm_fill(region.code)["made"] == 0  # full: nothing more

    worker_factory([region])
    resp = api.post("/api/v1/apps", {"name": "warm-e2e", "regions": [region.code]}, format="json")
    assert resp.status_code == 202, resp.content
    app_id = resp.json()["app"]
    op = operation_done(api, resp["Location"])
    assert op["status"] == "succeeded", op
    node = LedgerNode.objects.get(app_id=app_id)
    # The node is the warm one: its name, port and objects; nothing was made for it.
    assert (node.name, node.host_port, node.warm) == (warm.name, warm.host_port, str(warm.pk))
    assert docker_engine.containers.get(node.name).id == container.id
    assert "claimed over HTTP" in container.logs().decode()  # on its port, not copied in by the engine
    assert not docker_engine.containers.list(all=True, filters={"label": f"io.bsn.app={app_id}"})
    assert node_get(node, "/health").body["node_id"] == str(node.pk)
    assert node.endpoint == f"http://127.0.0.1:{warm.host_port}"
    assert assert_no_secret_in_any_environment(docker_engine) >= 1

    # The region makes up for it (the worker's fill after the claim).
    wait_for(
        lambda: WarmNode.objects.filter(region=region, state=WarmNode.State.READY).exists(),
        timeout=60,
        message="a new warm node",
    )
    again = WarmNode.objects.get(region=region)
    assert again.pk != warm.pk

    # It commits through the etcd ordering (the members were attached ahead).
    private, public = generate_key()
    resp = api.post(f"/api/v1/apps/{app_id}/users", {"name": "alice", "public_key": public}, format="json")
    assert resp.status_code == 201, resp.content
    signer = Client("http://unused", "-", app_id, "alice", private)
    resp = api.post(
        f"/api/v1/apps/{app_id}/transactions", signer.sign("kv", "put", {"key": "k", "value": "warm"}), format="json"
    )
    assert resp.status_code == 200 and resp.json()["status"] == "committed", resp.content

    # A restart (the engine's, not ours) finds its claim: same node, same data.
    docker_engine.containers.get(node.name).restart(timeout=5)
    wait_for(lambda: _answers(node.endpoint), timeout=30, message="the node back after a restart")
    assert node_get(node, "/state/kv/k").body["value"] == "warm"
    # The reconcile pass sees a node, and a warm node that is no orphan.
    report = reconcile_region(region.code)
    assert (report["orphans"], report["warm"]) == (0, 1), report
    assert LedgerNode.objects.get(pk=node.pk).state == LedgerNode.State.RUNNING

    # Deleting the app removes the claimed warm node's objects, and nothing else.
    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    assert operation_done(api, resp["Location"])["status"] == "succeeded"
    assert _objects_named(docker_engine, node.name) == {"container": False, "network": False, "volume": False}
    assert _objects_named(docker_engine, again.name) == {"container": True, "network": True, "volume": True}

    # No warm nodes wanted any more: the region drops them, leaving nothing behind.
    Region.objects.filter(pk=region.pk).update(warm_nodes=0)
    assert warm_nodes.warm_fill(region.code)["dropped"] == 1
    assert not WarmNode.objects.filter(region=region).exists()
    assert _objects_named(docker_engine, again.name) == {"container": False, "network": False, "volume": False}


def test_a_warm_node_that_stops_running_is_dropped_and_leftovers_are_orphans(make_regions, docker_engine, ledger_image):
    region = _warm_region(make_regions, count=2)
    assert warm_nodes.warm_fill(region.code)["made"] == 2
    gone, left = WarmNode.objects.filter(region=region).order_by("created_at")
    docker_engine.containers.get(gone.name).remove(force=True)  # behind the platform's back
    # Just made, it is given a moment (the pass may have listed the engine before its start).
    report = reconcile_region(region.code)
    assert (report["warm"], report["warm_dropped"], report["orphans"]) == (1, 0, 0), report
    WarmNode.objects.filter(pk=gone.pk).update(created_at=timezone.now() - warm_nodes.READY_GRACE * 2)
    report = reconcile_region(region.code)
    assert (report["warm"], report["warm_dropped"], report["orphans"]) == (1, 1, 0), report
    assert list(WarmNode.objects.filter(region=region)) == [left]
    assert _objects_named(docker_engine, gone.name) == {"container": False, "network": False, "volume": False}
    # A warm node whose row is lost (a database restored from before it) is an orphan:
    # collected after the grace period like any leftover, by its warm label.
    WarmNode.objects.filter(pk=left.pk).delete()
    report = reconcile_region(region.code)
    assert report["orphans"] == 1, report
    from django.core.cache import cache

    cache.set(f"bsn:orphan:{left.name}", 0, timeout=600)  # seen long ago: the grace is over
    report = reconcile_region(region.code)
    assert report["removed"] == 1, report
    assert _objects_named(docker_engine, left.name) == {"container": False, "network": False, "volume": False}


def test_an_app_on_two_regions_claims_one_warm_node_in_each_and_replicates(
    api, make_regions, worker_factory, docker_engine, ledger_image
):
    """...with the etcd user the ordering service made ahead (a spare) and one token of it
    for both nodes: the write commits through the spare's prefix and reaches both."""
    from apps.ordering import services as ordering
    from apps.ordering.models import AppOrderingCredential, OrderingCluster

    regions = make_regions("docker", count=2)
    Region.objects.filter(pk__in=[r.pk for r in regions]).update(warm_nodes=1)
    for region in regions:
        assert warm_nodes.warm_fill(region.code)["made"] == 1
    warm_names = set(WarmNode.objects.values_list("name", flat=True))
    ordering.ordering_ensure()
    OrderingCluster.objects.update(spare_users=1)
    assert ordering.ordering_spares_fill()["made"] == 1
    spare = AppOrderingCredential.objects.get(app__isnull=True)
    worker_factory(regions)
    resp = api.post("/api/v1/apps", {"name": "warm-two", "regions": [r.code for r in regions]}, format="json")
    app_id = resp.json()["app"]
    assert operation_done(api, resp["Location"])["status"] == "succeeded"
    nodes = list(LedgerNode.objects.filter(app_id=app_id))
    assert {n.name for n in nodes} == warm_names and all(n.warm for n in nodes)
    taken = AppOrderingCredential.objects.get(app_id=app_id)
    assert (taken.pk, taken.prefix) == (spare.pk, spare.prefix) and taken.token_encrypted

    private, public = generate_key()
    assert (
        api.post(f"/api/v1/apps/{app_id}/users", {"name": "bob", "public_key": public}, format="json").status_code
        == 201
    )
    signer = Client("http://unused", "-", app_id, "bob", private)
    resp = api.post(
        f"/api/v1/apps/{app_id}/transactions", signer.sign("kv", "put", {"key": "k", "value": "both"}), format="json"
    )
    assert resp.status_code == 200 and resp.json()["status"] == "committed", resp.content

    def everywhere() -> bool:
        for node in nodes:
            try:
                if node_get(node, "/state/kv/k").body.get("value") != "both":
                    return False
            except Exception:  # noqa: BLE001 - not there yet
                return False
        return True

    wait_for(everywhere, timeout=30, message="the write on both nodes")
    assert ordering.admin_client().range(spare.prefix, prefix=True, count_only=True).count > 0  # its keys
    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    assert operation_done(api, resp["Location"])["status"] == "succeeded"
    for name in warm_names:
        assert _objects_named(docker_engine, name) == {"container": False, "network": False, "volume": False}
    assert ordering.admin_client().user_get(spare.user) is None  # revoked with the app
    Region.objects.filter(pk__in=[r.pk for r in regions]).update(warm_nodes=0)
    for region in regions:
        warm_nodes.warm_fill(region.code)  # what the worker made meanwhile goes too
    OrderingCluster.objects.update(spare_users=0)
    ordering.ordering_spares_fill()  # the one the worker made after the create goes too
    assert not AppOrderingCredential.objects.filter(app__isnull=True).exists()


def test_a_claimed_warm_node_is_replaced_under_its_name_on_its_volume(
    api, live_server, make_regions, worker_factory, docker_engine, ledger_image
):
    """A rotation makes each node anew (a new generation): the claimed warm container goes,
    one with the node's own labels takes its name, network and volume; the chain is whole."""
    from tests.integration.test_upgrade_scale import Ledger

    regions = make_regions("docker", count=2)
    Region.objects.filter(pk__in=[r.pk for r in regions]).update(warm_nodes=1)
    for region in regions:
        assert warm_nodes.warm_fill(region.code)["made"] == 1
    warm_names = set(WarmNode.objects.values_list("name", flat=True))
    worker_factory(regions)
    ledger = Ledger(api, live_server, regions, "warm-rotated")
    assert set(LedgerNode.objects.filter(app_id=ledger.id).values_list("name", flat=True)) == warm_names
    for i in range(3):
        ledger.put(f"before-{i}", i)
    op = operation_done(api, ledger.post("rotate-credentials", {})["Location"], timeout=300)
    assert op["status"] == "succeeded", (op["last_error"], op["log"][-8:])
    for node in LedgerNode.objects.filter(app_id=ledger.id):
        labels = docker_engine.containers.get(node.name).labels
        assert labels["io.bsn.node"] == str(node.pk) and labels[LABEL_WARM] == node.warm
        assert labels["io.bsn.generation"] == "2"
        assert node_get(node, "/health").body["node_id"] == str(node.pk)
    ledger.put("after", "rotate")
    ledger.assert_whole()
    ledger.delete()
    for name in warm_names:
        assert _objects_named(docker_engine, name) == {"container": False, "network": False, "volume": False}
    Region.objects.filter(pk__in=[r.pk for r in regions]).update(warm_nodes=0)
    for region in regions:
        warm_nodes.warm_fill(region.code)


@pytest.mark.parametrize("key", ["its own", "another"])
def test_the_driver_hands_the_claim_over_http_and_copies_it_in_when_that_is_refused(
    key, make_regions, docker_engine, ledger_image
):
    """The claim sealed with the warm node's key is taken on its port; sealed with another
    (a SECRET_KEY rotated since the warm node was made) it is refused with 403, and the
    driver copies the same claim in through the engine instead: claimed either way."""
    import base64
    import io
    import json
    import tarfile
    import uuid

    from apps.chainapps.provisioning import runtime_fields
    from apps.common.models import installation_id
    from apps.runtime.drivers import driver_for_region
    from apps.runtime.spec import CLAIM_FILE, build_node_spec

    region = _warm_region(make_regions)
    assert warm_nodes.warm_fill(region.code)["made"] == 1
    warm = WarmNode.objects.select_related("framework", "region").get(region=region)
    claim_key = (
        warm_nodes.warm_claim_key(str(warm.pk))
        if key == "its own"
        else base64.urlsafe_b64encode(os.urandom(32)).decode()
    )
    app_id = str(uuid.uuid4())
    spec = build_node_spec(
        installation_id=installation_id(),
        tenant_id=str(uuid.uuid4()),
        app_id=app_id,
        node_id=str(uuid.uuid4()),
        generation=1,
        **runtime_fields(warm.framework, region),
        secrets={"BSN_NODE_API_CREDENTIAL": "a-node-credential-0123456789"},
        host_port=warm.host_port,
        name=warm.name,
        warm=str(warm.pk),
        claim_key=claim_key,
    )
    driver = driver_for_region(region)
    container = docker_engine.containers.get(warm.name)
    try:
        driver.ensure_node(spec)
        way = "claimed over HTTP" if key == "its own" else "claimed by file"
        wait_for(lambda: way in container.logs().decode(), timeout=15, message=way)
        stream, _ = container.get_archive(CLAIM_FILE)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            claimed = json.loads(tar.extractfile(tar.getmembers()[0]).read())
        assert claimed["BSN_APP_ID"] == app_id
        assert claimed["BSN_NODE_API_CREDENTIAL_FILE"] == "/data/.secrets/bsn_node_api_credential"
        wait_for(
            lambda: (
                _answers(f"http://127.0.0.1:{warm.host_port}")
                and requests.get(f"http://127.0.0.1:{warm.host_port}/health", timeout=2).status_code != 404
            ),
            timeout=15,
            message="the claimed node serving",
        )
    finally:
        Region.objects.filter(pk=region.pk).update(warm_nodes=0)
        assert warm_nodes.warm_fill(region.code)["dropped"] == 1  # nothing left behind

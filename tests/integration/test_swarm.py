"""A region that is a Docker Swarm (issue 12), end to end: the REST API, a real Celery
worker, a one-host swarm on engine e2 (tests/conftest.py ``swarm_engine``: ``docker swarm
init`` on loopback, the host labelled for the region) which starts without the ledger
image (it gets it by content from the control plane's engine).

An app there provisions, commits transactions, survives its task container being killed
(Swarm restarts it; the reconciler verifies the node as itself and never starts a second
one beside the service), upgrades with Swarm's rolling update (and a broken version is
rolled back by Swarm and reported as a failed upgrade), and is deleted leaving no
service, network, volume or secret. An app with one node on the swarm region and one on
a plain Docker region replicates across them."""

from __future__ import annotations

import json
import uuid

import pytest

from apps.chainapps.models import ChainApp, Framework, LedgerNode
from apps.chainapps.node_auth import node_auth
from apps.common.crypto import decrypt_secret
from apps.runtime import image_sync
from apps.runtime.nodeapi import NodeCallError, node_call
from apps.runtime.spec import LABEL_GENERATION
from bsn.client import Client, generate_key
from tests.conftest import _client_for, swarm_region
from tests.engines import engine_region
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import node_get, operation_done, wait_for
from tests.runtime.conftest import remove_swarm_objects

pytestmark = [pytest.mark.integration, pytest.mark.docker]

FAST_HEALTH = {"BSN_SWARM_HEALTH_INTERVAL": "2"}  # Swarm's verdicts in seconds (default 10 s)
SWARM_ORDERING_PORTS = "27000-27199"  # see the swarm ordering test


@pytest.fixture
def api(transactional_db):
    return _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))


def _left_on_swarm(client, tag: str) -> list[str]:
    """Everything of ours on the swarm whose name carries the test's region tag, plus
    every secret of this installation (their names are digests)."""
    from apps.common.models import installation_id

    selector = {"label": "io.bsn.managed=true"}
    names = [s["Spec"]["Name"] for s in client.api.services(filters=selector)]
    names += [n["Name"] for n in client.api.networks(filters=selector)]
    names += [v["Name"] for v in (client.api.volumes(filters=selector).get("Volumes") or [])]
    names += [c["Names"][0] for c in client.api.containers(all=True, filters=selector)]
    left = [n for n in names if tag in n]
    secrets = client.api.secrets(filters={"label": f"io.bsn.installation={installation_id()}"})
    return sorted(left + [s["Spec"]["Name"] for s in secrets])


def _story(client) -> str:
    lines = []
    for service in client.api.services():
        for task in client.api.tasks(filters={"service": service["ID"]}):
            status = task["Status"]
            lines.append(f"{service['Spec']['Name']} {status['State']} {status.get('Err') or status.get('Message')}")
    return "\n".join(lines)


def _user(api, app_id: str) -> Client:
    private, public = generate_key()
    resp = api.post(f"/api/v1/apps/{app_id}/users", {"name": "alice", "public_key": public}, format="json")
    assert resp.status_code == 201, resp.content
    return Client("http://unused", "-", app_id, "alice", private)


def _put(api, app_id: str, signer: Client, key: str, value) -> dict:
    reply = api.post(
        f"/api/v1/apps/{app_id}/transactions", signer.sign("kv", "put", {"key": key, "value": value}), format="json"
    )
    assert reply.status_code == 200 and reply.json()["status"] == "committed", reply.content
    return reply.json()


def _version(builtin: Framework, version: str, **fields) -> Framework:
    return Framework.objects.create(
        slug=f"bsn-ledger-{version.replace('.', '-')}-{uuid.uuid4().hex[:4]}",
        name=builtin.name,
        version=version,
        image=builtin.image,
        port=builtin.port,
        health_path=builtin.health_path,
        default_cpus=builtin.default_cpus,
        default_memory_mb=builtin.default_memory_mb,
        contract_templates=list(builtin.offered_templates()),
        **fields,
    )


def test_an_app_on_a_swarm_region_lives_heals_upgrades_and_leaves_nothing(
    api, swarm_engine, worker_factory, builtin_framework
):
    from apps.chainapps.reconcile import reconcile_region
    from apps.runtime.drivers import driver_for_region
    from apps.runtime.swarm import SwarmDriver

    client = swarm_engine.client()
    for image in client.images.list(name="bsn/ledger"):  # the swarm starts without the image
        client.images.remove(image.id, force=True)
    image_sync.forget()
    tag = uuid.uuid4().hex[:6]
    region = swarm_region(swarm_engine, f"sw{tag}-0")
    worker_factory([region], env=FAST_HEALTH)

    resp = api.post("/api/v1/apps", {"name": "on-swarm", "regions": [region.code]}, format="json")
    assert resp.status_code == 202, resp.content
    op = operation_done(api, resp["Location"], timeout=240)
    assert op["status"] == "succeeded", (op.get("last_error"), op.get("log", [])[-6:], _story(client))
    app_id = resp.json()["app"]
    node = LedgerNode.objects.get(app_id=app_id)
    assert node.state == LedgerNode.State.RUNNING
    service = client.api.inspect_service(node.name)  # a service, not a container
    assert service["Spec"]["Labels"]["io.bsn.node"] == str(node.pk)
    # The control plane learnt the task's host and port from Swarm.
    assert node.endpoint == f"http://{swarm_engine.publish_host}:{node.host_port}"
    assert node_get(node, "/health").body["node_id"] == str(node.pk)

    signer = _user(api, app_id)
    for i in range(3):
        _put(api, app_id, signer, "k", i)

    # Kill the task's container: Swarm starts a new task by itself.
    driver = driver_for_region(region)
    assert isinstance(driver, SwarmDriver)
    before = driver.observe(_spec(node))
    (container,) = client.containers.list(filters={"label": f"com.docker.swarm.service.name={node.name}"})
    container.kill()
    wait_for(
        lambda: (s := driver.observe(_spec(node))).state == "running" and s.runtime_id != before.runtime_id,
        timeout=90,
        message="Swarm to start a new task",
    )

    def verified() -> bool:
        """A reconcile pass; the new task counts once it answers as itself (it may still be
        starting at the first pass: unhealthy then, never restarted)."""
        report = reconcile_region(region.code)
        assert report["restarted"] == 0, report  # it never fights Swarm: nothing started beside the service
        node.refresh_from_db()
        return node.state == LedgerNode.State.RUNNING and node.runtime_id != before.runtime_id

    wait_for(verified, timeout=60, interval=0.5, message="the reconciler to verify the restarted node")
    assert node_get(node, "/health").body["node_id"] == str(node.pk)  # verified as itself
    assert len([s for s in client.api.services() if s["Spec"]["Name"] == node.name]) == 1
    assert api.get(f"/api/v1/apps/{app_id}/state/kv/k").json()["value"] == 2  # the data survived
    _put(api, app_id, signer, "after-kill", 1)

    # Upgrade: Swarm's rolling update of the service, reported as the usual Operation.
    target = _version(builtin_framework, "1.1.0")
    resp = api.post(f"/api/v1/apps/{app_id}/upgrade", {"framework": target.slug}, format="json")
    assert resp.status_code == 202, resp.content
    op = operation_done(api, resp["Location"], timeout=300)
    assert op["status"] == "succeeded", (op.get("last_error"), op.get("log", [])[-6:], _story(client))
    assert any("rolling update by the runtime: completed" in line["message"] for line in op["log"]), op["log"]
    service = client.api.inspect_service(node.name)
    assert service["UpdateStatus"]["State"] == "completed"
    assert service["Spec"]["Labels"][LABEL_GENERATION] == "2"
    assert ChainApp.objects.get(pk=app_id).framework == target
    assert api.get(f"/api/v1/apps/{app_id}/state/kv/after-kill").json()["value"] == 1
    _put(api, app_id, signer, "after-upgrade", 1)

    # Rotating the node's API credential is an operation too: a new Swarm secret, the
    # service rolled onto it, the old secret gone, the old credential refused.
    def secret_names() -> set[str]:
        spec = client.api.inspect_service(node.name)["Spec"]["TaskTemplate"]["ContainerSpec"]
        return {s["SecretName"] for s in spec.get("Secrets") or []}

    node.refresh_from_db()
    old_credential, old_secrets = node.api_credential_encrypted, secret_names()
    resp = api.post(f"/api/v1/apps/{app_id}/rotate-credentials")
    assert resp.status_code == 202, resp.content
    op = operation_done(api, resp["Location"], timeout=300)
    assert op["status"] == "succeeded", (op.get("last_error"), op.get("log", [])[-6:], _story(client))
    assert any("rolling update by the runtime: completed" in line["message"] for line in op["log"]), op["log"]
    node.refresh_from_db()
    assert node.api_credential_encrypted != old_credential and node.generation == 3
    replaced = old_secrets - secret_names()
    assert len(replaced) == 1, (old_secrets, secret_names())  # the credential's secret, and only it
    wait_for(
        lambda: not replaced & {s["Spec"]["Name"] for s in client.api.secrets()},
        timeout=60,
        message="the old credential's secret removed from the swarm",
    )
    assert node_get(node, "/health").body["node_id"] == str(node.pk)
    stale = LedgerNode.objects.get(pk=node.pk)
    stale.api_credential_encrypted = old_credential
    with pytest.raises(NodeCallError):
        node_call(node.endpoint, "GET", "/chain", auth=node_auth(stale), connect_timeout=5, read_timeout=5)
    clear = decrypt_secret(node.api_credential_encrypted)
    assert clear not in json.dumps(client.api.inspect_service(node.name))  # `docker service inspect` shows none
    assert api.get(f"/api/v1/apps/{app_id}/state/kv/after-upgrade").json()["value"] == 1

    # A version that never becomes healthy: Swarm rolls it back, the upgrade fails saying so,
    # and the node keeps serving the version it ran.
    broken = _version(builtin_framework, "9.9.9", command=["sleep", "600"])
    resp = api.post(f"/api/v1/apps/{app_id}/upgrade", {"framework": broken.slug}, format="json")
    op = operation_done(api, resp["Location"], timeout=300)
    assert op["status"] == "failed", op
    assert "rolled the node back" in op["last_error"], op["last_error"]
    node.refresh_from_db()
    assert node.framework == target and node.generation == 3  # what really runs
    assert ChainApp.objects.get(pk=app_id).framework == target
    wait_for(lambda: driver.observe(_spec(node)).state == "running", timeout=60, message="the rolled back task")
    node.refresh_from_db()
    assert api.get(f"/api/v1/apps/{app_id}/state/kv/after-upgrade").json()["value"] == 1

    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    op = operation_done(api, resp["Location"], timeout=120)
    assert op["status"] == "succeeded", (op.get("last_error"), op.get("log", [])[-6:])
    assert _left_on_swarm(client, tag) == []


def _etcd_app(api, client, name: str, regions: list[str]) -> str:
    """Create an app on several regions through the API; it is etcd-ordered. Its id."""
    resp = api.post("/api/v1/apps", {"name": name, "regions": regions}, format="json")
    assert resp.status_code == 202, resp.content
    op = operation_done(api, resp["Location"], timeout=300)
    assert op["status"] == "succeeded", (op.get("last_error"), op.get("log", [])[-6:], _story(client))
    app_id = resp.json()["app"]
    assert ChainApp.objects.get(pk=app_id).ordering == ChainApp.Ordering.ETCD
    return app_id


def _spec(node: LedgerNode):
    from apps.chainapps.provisioning import node_spec

    return node_spec(
        LedgerNode.objects.select_related("app__framework", "region", "framework").get(pk=node.pk), configured=False
    )


def test_an_app_on_a_swarm_region_and_a_docker_region_replicates(
    api, swarm_engine, extra_engines, worker_factory, docker_engine
):
    tag = uuid.uuid4().hex[:6]
    docker_region = engine_region(extra_engines["main"], f"sw{tag}-0", "main engine")
    swarm = swarm_region(swarm_engine, f"sw{tag}-1")
    worker_factory([docker_region, swarm], env=FAST_HEALTH)
    client = swarm_engine.client()
    app_id = _etcd_app(api, client, "mixed", [docker_region.code, swarm.code])
    signer = _user(api, app_id)
    top = 0
    for i in range(10):
        top = _put(api, app_id, signer, f"k{i}", i)["height"]

    def replicated():
        nodes = api.get(f"/api/v1/apps/{app_id}/nodes").json()["results"]
        heads = {(n["chain_height"], n["chain_head"]) for n in nodes}
        return nodes if len(nodes) == 2 and len(heads) == 1 and (nodes[0]["chain_height"] or 0) >= top else None

    nodes = wait_for(replicated, timeout=90, interval=0.5, message="both nodes at the same head")
    assert {n["region"] for n in nodes} == {docker_region.code, swarm.code}
    swarm_node = LedgerNode.objects.get(app_id=app_id, region=swarm)
    assert client.api.inspect_service(swarm_node.name)["Spec"]["Labels"]["io.bsn.node"] == str(swarm_node.pk)
    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    op = operation_done(api, resp["Location"], timeout=120)
    assert op["status"] == "succeeded", (op.get("last_error"), op.get("log", [])[-6:])
    assert _left_on_swarm(client, tag) == []
    left_main = [c.name for c in docker_engine.containers.list(all=True) if tag in c.name]
    assert left_main == []


def _ordering_services(client) -> list[dict]:
    from apps.common.models import installation_id

    selector = [f"io.bsn.installation={installation_id()}", "io.bsn.role=ordering"]
    return client.api.services(filters={"label": selector})


def test_an_app_on_two_swarm_regions_is_ordered_by_members_that_are_services_of_the_swarm(
    api, swarm_engine, worker_factory, settings
):
    """No Docker region: the ordering members are services on the swarm, pinned each to a
    host (spread over the hosts; this swarm has one), on the encrypted ordering overlay
    network, reached by the app's nodes at their published ports. A killed member is
    restarted by Swarm and the app keeps committing throughout."""
    from apps.common.models import installation_id
    from apps.ordering import services as ordering
    from apps.ordering.models import AppOrderingCredential, OrderingMember
    from apps.ordering.spec import ordering_network_name

    client = swarm_engine.client()
    tag = uuid.uuid4().hex[:6]
    first, second = swarm_region(swarm_engine, f"so{tag}-0"), swarm_region(swarm_engine, f"so{tag}-1")
    # The test swarm shares the machine's network namespace with the main engine, where the
    # ordering members of earlier tests' installations hold the top of the port range; this
    # swarm cannot see them (a real swarm host is its own machine), so its members take a
    # slice of their own rather than walk into those ports.
    settings.BSN_NODE_PORT_RANGE = SWARM_ORDERING_PORTS
    worker_factory([first, second], env={**FAST_HEALTH, "BSN_NODE_PORT_RANGE": SWARM_ORDERING_PORTS})
    try:
        app_id = _etcd_app(api, client, "swarm-ordered", [first.code, second.code])

        members = list(OrderingMember.objects.select_related("region").order_by("index"))
        assert [m.region.code for m in members] == [first.code] * 3  # no Docker region: one swarm region
        services = {s["Spec"]["Name"]: s for s in _ordering_services(client)}
        assert sorted(services) == [m.name for m in members]
        host = client.info()["Swarm"]["NodeID"]
        for service in services.values():
            template = service["Spec"]["TaskTemplate"]
            container = template["ContainerSpec"]
            assert f"node.id=={host}" in template["Placement"]["Constraints"]  # pinned where its volume is
            assert container["User"] == "10001:10001" and container["ReadOnly"] is True
            assert container["CapabilityDrop"] == ["ALL"] and container["Healthcheck"] == {"Test": ["NONE"]}
            assert service["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
        network = client.api.inspect_network(ordering_network_name(installation_id()), scope="swarm")
        assert network["Driver"] == "overlay" and "encrypted" in (network.get("Options") or {})
        # The app's nodes reach the members at their published ports, never by a shared network,
        # and the app's etcd password is a Swarm secret, not in `docker service inspect`.
        password = decrypt_secret(AppOrderingCredential.objects.get(app_id=app_id).password_encrypted)
        for node in LedgerNode.objects.filter(app_id=app_id):
            seen = json.dumps(client.api.inspect_service(node.name))
            assert password not in seen
            assert all(m.endpoint in seen for m in members), (seen, [m.endpoint for m in members])

        signer = _user(api, app_id)
        top = max(_put(api, app_id, signer, f"k{i}", i)["height"] for i in range(5))

        # Kill one member's container: the two others keep the quorum, Swarm restarts it.
        victim = members[1]
        (container,) = client.containers.list(filters={"label": f"com.docker.swarm.service.name={victim.name}"})
        container.kill()
        for i in range(5):
            top = max(top, _put(api, app_id, signer, f"during{i}", i)["height"])
        wait_for(
            lambda: ordering.ordering_heal()["state"] == "healthy",
            timeout=90,
            interval=1,
            message=lambda: f"the ordering service healthy again\n{_story(client)}",
        )
        assert len(_ordering_services(client)) == 3  # Swarm restarted it; nothing started beside it
        live = client.containers.list(filters={"label": f"com.docker.swarm.service.name={victim.name}"})
        assert len(live) == 1 and live[0].id != container.id
        top = max(top, _put(api, app_id, signer, "after", 1)["height"])

        def replicated():
            nodes = api.get(f"/api/v1/apps/{app_id}/nodes").json()["results"]
            heads = {(n["chain_height"], n["chain_head"]) for n in nodes}
            return len(nodes) == 2 and len(heads) == 1 and (nodes[0]["chain_height"] or 0) >= top

        wait_for(replicated, timeout=90, interval=0.5, message="both nodes at the same head")
        resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
        op = operation_done(api, resp["Location"], timeout=120)
        assert op["status"] == "succeeded", (op.get("last_error"), op.get("log", [])[-6:])
        assert _left_on_swarm(client, tag) == []
    finally:
        # The members are the platform's: they outlive the app; the test removes them.
        remove_swarm_objects(client, installation_id())

"""Upgrade and scale, end to end: the REST API, a real Celery worker, Docker, the etcd
ordering service and the gateway. A second framework version is a Framework row in the
built-in ledger's family pointing at the same image (so the nodes really are replaced:
a new container generation on the same volume); the broken one names an image tag that
exists nowhere (no registry is reachable, and the driver never pulls: creating its
container fails at once)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime

import pytest

from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.runtime.spec import LABEL_GENERATION
from bsn.client import Client, generate_key
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import node_get, operation_done, wait_for
from tests.integration.test_replicated_ledger import _chain, _has_tx, _submit_until_acknowledged, _verify

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def _live(app_id) -> list[LedgerNode]:
    nodes = LedgerNode.objects.filter(app_id=app_id).exclude(state=LedgerNode.State.REMOVED)
    return list(nodes.select_related("region", "framework").order_by("region__code"))


def _same_head(app_id, at_least: int) -> dict | None:
    chains = [_chain(n) for n in _live(app_id)]
    if not chains or any(c is None for c in chains):
        return None
    heads = {(c["height"], c["head_hash"], c["state_root"]) for c in chains}
    return chains[0] if len(heads) == 1 and chains[0]["height"] >= at_least else None


class Ledger:
    """A chain app with a registered user, written to through the gateway."""

    def __init__(self, api, live_server, regions, name: str):
        self.api = api
        resp = api.post("/api/v1/apps", {"name": name, "regions": [r.code for r in regions]}, format="json")
        assert resp.status_code == 202, resp.content
        self.id = resp.json()["app"]
        created = operation_done(api, resp["Location"], timeout=180)
        assert created["status"] == "succeeded", created
        private, public = generate_key()
        resp = api.post(f"/api/v1/apps/{self.id}/users", {"name": "alice", "public_key": public}, format="json")
        assert resp.status_code == 201, resp.content
        token = api._credentials["HTTP_AUTHORIZATION"].split()[1]
        self.client = Client(live_server.url, token, self.id, "alice", private)
        self.acknowledged: list[str] = []
        self.height = 0

    def put(self, key: str, value) -> dict:
        receipt = _submit_until_acknowledged(self.client, self.client.sign("kv", "put", {"key": key, "value": value}))
        assert receipt["status"] == "committed", receipt
        self.acknowledged.append(receipt["tx_id"])
        self.height = max(self.height, receipt["height"])
        return receipt

    def post(self, path: str, body: dict) -> dict:
        resp = self.api.post(f"/api/v1/apps/{self.id}/{path}", body, format="json")
        assert resp.status_code == 202, resp.content
        return resp

    def assert_whole(self) -> dict:
        """Every live node at one head, holding every acknowledged transaction; the chain verifies."""
        head = wait_for(lambda: _same_head(self.id, self.height), timeout=90, message="every node at one head")
        for node in _live(self.id):
            missing = [tx for tx in self.acknowledged if not _has_tx(node, tx)]
            assert not missing, (node.name, missing)
        assert "ok" in _verify(self.id).lower()
        return head

    def delete(self) -> None:
        resp = self.api.delete(f"/api/v1/apps/{self.id}?keep_data=false")
        deleted = operation_done(self.api, resp["Location"], timeout=120)
        assert deleted["status"] == "succeeded", (deleted["last_error"], deleted["log"][-6:])


@pytest.fixture
def api(transactional_db):
    return _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))


def _version(builtin: Framework, version: str, *, image: str | None = None) -> Framework:
    return Framework.objects.create(
        slug=f"bsn-ledger-{version.replace('.', '-')}",
        name=builtin.name,  # the same family
        version=version,
        image=image or builtin.image,
        port=builtin.port,
        health_path=builtin.health_path,
        default_cpus=builtin.default_cpus,
        default_memory_mb=builtin.default_memory_mb,
        contract_templates=list(builtin.offered_templates()),
    )


def _generation(docker_engine, node: LedgerNode) -> str:
    return docker_engine.containers.get(node.name).labels[LABEL_GENERATION]


def test_rolling_upgrade_keeps_every_transaction(
    api, live_server, make_regions, worker_factory, docker_engine, ledger_image, builtin_framework
):
    regions = make_regions("docker", count=2)
    worker_factory(regions)
    ledger = Ledger(api, live_server, regions, "upgraded")
    for i in range(6):
        ledger.put(f"before-{i}", i)
    before = {n.pk: (_generation(docker_engine, n), docker_engine.containers.get(n.name).id) for n in _live(ledger.id)}
    target = _version(builtin_framework, "0.2.1")

    # Writes keep coming while the nodes are replaced one at a time.
    stop = threading.Event()
    during: list[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 40:
            during.append(ledger.put(f"during-{i}", i)["tx_id"])
            i += 1

    thread = threading.Thread(target=writer, daemon=True)
    resp = ledger.post("upgrade", {"framework": target.slug})
    thread.start()
    op = operation_done(api, resp["Location"], timeout=300)
    stop.set()
    thread.join(120)
    assert op["status"] == "succeeded", (op["last_error"], op["log"][-8:])

    # Every node runs the new version, each replaced once (a new container on its volume).
    app = ChainApp.objects.get(pk=ledger.id)
    assert app.framework == target and app.status == "running"
    nodes = _live(ledger.id)
    for node in nodes:
        assert node.framework == target
        generation, container_id = before[node.pk]
        assert _generation(docker_engine, node) == str(int(generation) + 1)
        assert docker_engine.containers.get(node.name).id != container_id
        assert node_get(node, "/health").body["node_id"] == str(node.pk)  # the same identity (key, credential)
    listed = api.get(f"/api/v1/apps/{ledger.id}/nodes").json()["results"]
    assert {n["framework"] for n in listed} == {target.slug}

    # The log says which node went, in order, and when each came back.
    messages = [line["message"] for line in op["log"]]
    first, second = (n.region.code for n in nodes)
    went = [i for i, m in enumerate(messages) if "upgrading node" in m]
    back = [i for i, m in enumerate(messages) if f"back on {target.slug} 0.2.1, healthy at height" in m]
    assert len(went) == len(back) == 2
    assert went[0] < back[0] < went[1] < back[1]  # the second node only after the first was back
    assert messages[went[0]].startswith(f"{first}:") and messages[went[1]].startswith(f"{second}:")
    assert {s["state"] for s in op["steps"].values()} == {"done"}

    # Nothing acknowledged was lost, before or during; the chain verifies; writes go on.
    assert len(during) >= 1
    ledger.assert_whole()
    ledger.put("after", "upgrade")
    ledger.assert_whole()
    ledger.delete()


def test_an_upgrade_whose_image_cannot_start_stops_at_the_first_node(
    api, live_server, make_regions, worker_factory, docker_engine, ledger_image, builtin_framework
):
    regions = make_regions("docker", count=2)
    worker_factory(regions, env={"BSN_HEAL_ON_EVENTS": "false"})
    ledger = Ledger(api, live_server, regions, "broken-upgrade")
    for i in range(3):
        ledger.put(f"k{i}", i)
    broken = _version(builtin_framework, "9.9.9", image=f"bsn/ledger:missing-{uuid.uuid4().hex[:8]}")
    first, second = _live(ledger.id)
    second_container = docker_engine.containers.get(second.name).id

    op = operation_done(api, ledger.post("upgrade", {"framework": broken.slug})["Location"], timeout=180)
    assert op["status"] == "failed", op
    # The reason names the node that did not come back; the next node was never touched.
    assert first.region.code in op["last_error"] and first.name in op["last_error"]
    assert op["steps"][str(first.pk)]["state"] == "failed"
    assert op["steps"][str(second.pk)]["state"] == "skipped"
    app = ChainApp.objects.get(pk=ledger.id)
    assert app.framework == builtin_framework  # the app stays on the old version
    assert app.status == "degraded"  # one node serves, one does not: the truth
    first, second = _live(ledger.id)
    assert (first.framework, second.framework) == (broken, builtin_framework)
    assert first.last_error
    assert docker_engine.containers.get(second.name).id == second_container  # untouched
    assert node_get(second, "/health").body["node_id"] == str(second.pk)

    # The old version on the other node still serves: reads and writes.
    ledger.put("while-degraded", 1)
    assert api.get(f"/api/v1/apps/{ledger.id}/state/k0").json()["value"] == 0

    # Back to the previous version: only the node that moved is replaced, and the app is whole.
    op = operation_done(api, ledger.post("upgrade", {"framework": builtin_framework.slug})["Location"], timeout=180)
    assert op["status"] == "succeeded", (op["last_error"], op["log"][-6:])
    assert "already runs" in op["steps"][str(second.pk)].get("error", "") or any(
        "already runs" in line["message"] for line in op["log"]
    )
    assert docker_engine.containers.get(second.name).id == second_container
    assert {n.framework for n in _live(ledger.id)} == {builtin_framework}
    assert ChainApp.objects.get(pk=ledger.id).status == "running"
    ledger.assert_whole()
    ledger.delete()


def test_scale_out_catches_up_and_scale_in_removes_the_node(
    api, live_server, make_regions, worker_factory, docker_engine, ledger_image
):
    regions = make_regions("docker", count=2)
    worker_factory(regions)
    ledger = Ledger(api, live_server, regions[:1], "scaled")
    for i in range(5):
        ledger.put(f"k{i}", i)
    kept, added = regions

    # 1 -> 2: the kept node restarts knowing the new node; the new one reaches the head.
    op = operation_done(api, ledger.post("scale", {"regions": [kept.code, added.code]})["Location"], timeout=240)
    assert op["status"] == "succeeded", (op["last_error"], op["log"][-8:])
    new = LedgerNode.objects.get(app_id=ledger.id, region=added)
    assert new.state == "running" and new.chain_height >= ledger.height
    assert any(f"{added.code}: node {new.name} added, healthy at height" in line["message"] for line in op["log"])
    old = LedgerNode.objects.get(app_id=ledger.id, region=kept)
    env = docker_engine.containers.get(old.name).attrs["Config"]["Env"]
    assert f"BSN_PEERS=http://{new.name}:8080" in env
    assert api.get(f"/api/v1/apps/{ledger.id}").json()["regions"] == [kept.code, added.code]
    ledger.assert_whole()
    ledger.put("two-nodes", 2)
    ledger.assert_whole()

    # 2 -> 1 (data kept by default): the dropped node's container is gone, its volume stays.
    op = operation_done(api, ledger.post("scale", {"regions": [kept.code]})["Location"], timeout=120)
    assert op["status"] == "succeeded", (op["last_error"], op["log"][-8:])
    assert LedgerNode.objects.get(pk=new.pk).state == "removed"
    assert not docker_engine.containers.list(all=True, filters={"name": f"^{new.name}$"})
    assert docker_engine.volumes.get(f"{new.name}-data")
    app = api.get(f"/api/v1/apps/{ledger.id}").json()
    assert (app["regions"], app["status"]) == ([kept.code], "running")
    ledger.put("one-node", 1)
    ledger.assert_whole()

    # 1 -> 2 again: the region's node comes back as itself, from its kept data.
    op = operation_done(api, ledger.post("scale", {"regions": [kept.code, added.code]})["Location"], timeout=240)
    assert op["status"] == "succeeded", (op["last_error"], op["log"][-8:])
    assert LedgerNode.objects.get(app_id=ledger.id, region=added).pk == new.pk
    ledger.assert_whole()

    # 2 -> 1 with keep_data=false: the volume goes too.
    resp = ledger.post("scale", {"regions": [kept.code], "keep_data": False})
    op = operation_done(api, resp["Location"], timeout=120)
    assert op["status"] == "succeeded", (op["last_error"], op["log"][-8:])
    assert not docker_engine.volumes.list(filters={"name": f"{new.name}-data"})
    ledger.put("last", 1)
    ledger.assert_whole()
    assert Operation.objects.filter(app_id=ledger.id, kind="scale", status="succeeded").count() == 4
    ledger.delete()


def test_a_worker_killed_mid_upgrade_replaces_no_node_twice(
    api, live_server, make_regions, worker_factory, docker_engine, ledger_image, builtin_framework
):
    regions = make_regions("docker", count=2)
    worker = worker_factory(regions, stale_seconds=8, env={"BSN_HEAL_ON_EVENTS": "false"})
    ledger = Ledger(api, live_server, regions, "killed-upgrade")
    for i in range(4):
        ledger.put(f"k{i}", i)
    generations = {n.pk: n.generation for n in _live(ledger.id)}
    target = _version(builtin_framework, "0.2.2")
    resp = ledger.post("upgrade", {"framework": target.slug})
    op_id = resp.json()["id"]

    # SIGKILL the worker once the first node's replacement has begun (its new generation
    # and the chain head are recorded), before the node is back.
    first = _live(ledger.id)[0]
    wait_for(
        lambda: "head" in (Operation.objects.get(pk=op_id).steps.get(str(first.pk)) or {}),
        timeout=60,
        interval=0.02,
        message="the first node's replacement to begin",
    )
    worker.kill()
    op = Operation.objects.get(pk=op_id)
    assert op.status == "running" and op.steps[str(first.pk)]["state"] == "pending"

    # A fresh worker (with beat, which resumes the stale operation) finishes it.
    worker_factory(regions, stale_seconds=8, beat=True, env={"BSN_HEAL_ON_EVENTS": "false"})
    final = operation_done(api, resp["Location"], timeout=240)
    assert final["status"] == "succeeded", (final["last_error"], final["log"][-8:])
    assert final["attempts"] >= 2
    for node in _live(ledger.id):  # each node replaced exactly once
        assert node.generation == generations[node.pk] + 1, node.name
        assert _generation(docker_engine, node) == str(node.generation)
        assert node.framework == target
    went = [line["message"] for line in final["log"] if "upgrading node" in line["message"]]
    assert len(went) == 2, went  # the first node's replacement was recorded once, then resumed
    ledger.assert_whole()  # its data survived
    ledger.put("after", 1)
    ledger.assert_whole()
    ledger.delete()


def test_a_node_whose_new_version_keeps_exiting_fails_the_upgrade_within_its_bound(
    api, live_server, make_regions, worker_factory, docker_engine, ledger_image, builtin_framework
):
    regions = make_regions("docker", count=2)
    bound = 15
    worker_factory(
        regions,
        env={
            "BSN_HEAL_ON_EVENTS": "false",
            "BSN_LIFECYCLE_NODE_TIMEOUT": str(bound),
            "BSN_NODE_HEALTH_TIMEOUT": "5",
        },
    )
    ledger = Ledger(api, live_server, regions, "crashing-upgrade")
    ledger.put("k", 1)
    crashing = _version(builtin_framework, "0.2.9")
    Framework.objects.filter(pk=crashing.pk).update(command=["python3", "-c", "raise SystemExit(3)"])
    first, second = _live(ledger.id)

    op = operation_done(api, ledger.post("upgrade", {"framework": crashing.slug})["Location"], timeout=180)
    assert op["status"] == "failed", op
    assert f"node {first.name} did not come back healthy at the chain head within {bound} s" in op["last_error"]
    assert op["steps"][str(second.pk)]["state"] == "skipped"
    went = next(line["at"] for line in op["log"] if "upgrading node" in line["message"])
    took = (datetime.fromisoformat(op["finished_at"]) - datetime.fromisoformat(went)).total_seconds()
    assert bound <= took < bound + 60, took  # retried until the bound, then gave up
    assert ChainApp.objects.get(pk=ledger.id).framework == builtin_framework
    assert ChainApp.objects.get(pk=ledger.id).status == "degraded"
    assert LedgerNode.objects.get(pk=second.pk).framework == builtin_framework
    ledger.put("still-serving", 2)  # the node on the old version commits alone
    ledger.delete()


def _call_with(node: LedgerNode, encrypted_credential: str):
    """``GET /chain`` on ``node`` signed with the credential ``encrypted_credential`` (as stored)."""
    from apps.chainapps.node_auth import node_auth
    from apps.runtime.nodeapi import node_call

    node.refresh_from_db()
    node.api_credential_encrypted = encrypted_credential
    return node_call(node.endpoint, "GET", "/chain", auth=node_auth(node), connect_timeout=5, read_timeout=5)


def test_rotating_the_node_credentials_replaces_each_node_and_retires_the_old_credential(
    api, live_server, make_regions, worker_factory, docker_engine, ledger_image, builtin_framework
):
    """Issue 12: rotating a secret is an operation. Each node is replaced in turn (a new
    generation on its volume) with a new API credential as a file; it proves itself with
    the new one, the old one is refused, nothing acknowledged is lost."""
    from apps.common.crypto import decrypt_secret
    from apps.runtime.nodeapi import NodeCallError

    regions = make_regions("docker", count=2)
    worker_factory(regions)
    ledger = Ledger(api, live_server, regions, "rotated")
    for i in range(3):
        ledger.put(f"before-{i}", i)
    old = {n.pk: (n.api_credential_encrypted, _generation(docker_engine, n)) for n in _live(ledger.id)}
    for node in _live(ledger.id):
        assert _call_with(node, old[node.pk][0]).body["height"] >= 1

    resp = ledger.post("rotate-credentials", {})
    op = operation_done(api, resp["Location"], timeout=300)
    assert op["status"] == "succeeded", (op["last_error"], op["log"][-8:])
    messages = [line["message"] for line in op["log"]]
    went = [i for i, m in enumerate(messages) if "with a new API credential" in m]
    back = [i for i, m in enumerate(messages) if "back with its new API credential, healthy at height" in m]
    assert len(went) == len(back) == 2 and went[0] < back[0] < went[1] < back[1], messages

    for node in _live(ledger.id):
        previous, generation = old[node.pk]
        assert node.api_credential_encrypted != previous and node.api_credential_previous_encrypted == ""
        assert _generation(docker_engine, node) == str(int(generation) + 1)
        assert node_get(node, "/health").body["node_id"] == str(node.pk)  # proves itself with the new one
        with pytest.raises(NodeCallError):
            _call_with(node, previous)  # the old credential is refused
        env = docker_engine.containers.get(node.name).attrs["Config"]["Env"] or []
        clear = decrypt_secret(node.api_credential_encrypted)
        assert not any(clear in e for e in env)  # a file, never the environment
    ledger.put("after", "rotate")
    ledger.assert_whole()
    ledger.delete()

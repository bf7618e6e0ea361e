"""A 3-node chain app ordered by the etcd ordering service, reached through the gateway.

Kill the proposer, kill an ordering member, keep submitting, bring them back: every node
reaches the same head, the chain verifies, nothing acknowledged is missing. Then restart
every node and every member at once: the chain is intact.
"""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import call_command

from apps.chainapps.models import LedgerNode
from apps.chainapps.reconcile import reconcile_region
from apps.runtime.nodeapi import NodeCallError
from bsn.client import Client, generate_key
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import (
    assert_no_secret_in_any_environment,
    node_get,
    node_post,
    operation_done,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def _chain(node: LedgerNode) -> dict | None:
    try:
        reply = node_get(node, "/chain", timeout=2)
    except NodeCallError:
        return None
    return reply.body if reply.status == 200 else None


def _has_tx(node: LedgerNode, tx_id: str) -> bool:
    return node_get(node, f"/tx/{tx_id}").status == 200


def _submit_until_acknowledged(client: Client, envelope: dict, *, timeout: float = 60) -> dict:
    """Clients retry the same signed envelope; the nonce guarantees a single apply."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            receipt = client.submit_envelope(envelope)
            if receipt.get("status") in ("committed", "failed"):
                return receipt
            last = receipt
        except Exception as exc:  # noqa: BLE001 - gateway 503/504 while the cluster heals
            last = exc
        time.sleep(0.3)
    pytest.fail(f"transaction {envelope['tx'].get('args')} never acknowledged: {last!r}", pytrace=False)


def _nodes(app_id) -> list[LedgerNode]:
    return list(LedgerNode.objects.filter(app_id=app_id).select_related("region").order_by("region__code"))


def _all_at_same_head(app_id, at_least: int) -> dict | None:
    chains = [_chain(n) for n in _nodes(app_id)]
    if any(c is None for c in chains):
        return None
    heads = {(c["height"], c["head_hash"], c["state_root"]) for c in chains}
    if len(heads) == 1 and chains[0]["height"] >= at_least:
        return chains[0]
    return None


def _verify(app_id) -> str:
    out = io.StringIO()
    call_command("bsn_chain_verify", str(app_id), stdout=out)
    return out.getvalue()


def test_three_node_app_survives_proposer_and_member_kills(
    transactional_db, live_server, make_regions, worker_factory, docker_engine, ledger_image
):
    from apps.chainapps.models import ChainApp, Framework
    from apps.ordering.models import OrderingMember
    from apps.ordering.services import admin_client, ordering_app_credentials, ordering_heal
    from bsn.ledger.etcd_http import EtcdClient
    from tests.ordering.conftest import LeasePinner

    regions = make_regions("docker", count=3)
    # The killed proposer must stay down: ordering's failover is under test, not healing
    # (with it on, the restarted node may win the next election itself).
    worker_factory(regions, env={"BSN_HEAL_ON_EVENTS": "false"})
    api = _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))
    resp = api.post("/api/v1/apps", {"name": "replicated", "regions": [r.code for r in regions]}, format="json")
    assert resp.status_code == 202, resp.content
    app_id = resp.json()["app"]
    assert operation_done(api, resp["Location"], timeout=180)["status"] == "succeeded"

    private, public = generate_key()
    assert (
        api.post(f"/api/v1/apps/{app_id}/users", {"name": "alice", "public_key": public}, format="json").status_code
        == 201
    )
    token = api._credentials["HTTP_AUTHORIZATION"].split()[1]
    client = Client(live_server.url, token, app_id, "alice", private)
    # Read-your-writes: the moment the API confirmed alice, every node takes her
    # transactions, also a node whose watch has not delivered her block yet (it catches
    # up with the ordering before it would say "unknown signer").
    for n, node in enumerate(_nodes(app_id)):
        reply = node_post(node, "/tx", client.sign("kv", "put", {"key": f"first-{n}", "value": n}))
        assert reply.status == 200 and reply.body["status"] == "committed", reply.body

    acknowledged: list[str] = []

    def put(i: int) -> None:
        envelope = client.sign("kv", "put", {"key": f"k{i}", "value": i})
        receipt = _submit_until_acknowledged(client, envelope)
        assert receipt["status"] == "committed", receipt
        acknowledged.append(receipt["tx_id"])

    for i in range(10):
        put(i)
    # Node keys, node credentials, the app's etcd password, etcd's root password: files only.
    assert assert_no_secret_in_any_environment(docker_engine) >= 6  # 3 nodes, 3 ordering members

    # 1. kill the proposer node, while another app's etcd credential keeps every lease in
    #    the cluster alive (etcd checks no permission on keep-alives): its lease outlives
    #    it, and the app still fails over (docs/ordering.md, "Leases").
    proposer_id = wait_for(lambda: (_chain(_nodes(app_id)[0]) or {}).get("proposer"), timeout=30, message="a proposer")
    proposer = LedgerNode.objects.get(pk=proposer_id)
    root, prefix = admin_client(), f"/bsn/apps/{app_id}/"
    held = root.get(f"{prefix}proposer")
    assert held.value.decode() == proposer_id and held.lease
    other = ChainApp.objects.create(
        tenant=TenantFactory(),
        name="foreign",
        framework=Framework.objects.filter(builtin=True).first(),
        ordering="etcd",
    )
    creds = ordering_app_credentials(other)
    foreign = EtcdClient(
        [m.endpoint for m in OrderingMember.objects.all()], user=creds["user"], password=creds["password"]
    )
    with LeasePinner(foreign) as pinner:
        wait_for(lambda: held.lease in pinner.kept, timeout=10, message="the proposer lease pinned")
        docker_engine.containers.get(proposer.name).kill()
        for i in range(10, 20):
            put(i)
    now = root.get(f"{prefix}proposer")
    assert now.value.decode() != proposer_id and now.lease != held.lease
    # Not the TTL (the lease was kept alive): a survivor saw pending work with no block and took over.
    logs = b"".join(docker_engine.containers.get(n.name).logs() for n in _nodes(app_id) if n.pk != proposer.pk)
    assert f"deposed proposer {proposer_id}".encode() in logs

    # 2. kill one ordering member
    member = OrderingMember.objects.order_by("index").first()
    docker_engine.containers.get(member.name).kill()
    for i in range(20, 30):
        put(i)

    # 3. bring them back: the reconciler restarts the node, healing restarts the member
    for region in regions:
        reconcile_region(region.code)
    ordering_heal()
    head = wait_for(lambda: _all_at_same_head(app_id, at_least=1), timeout=120, message="all nodes at one head")
    for i in range(30, 35):
        put(i)
    head = wait_for(
        lambda: _all_at_same_head(app_id, at_least=head["height"] + 1), timeout=60, message="all nodes at the new head"
    )
    for node in _nodes(app_id):
        for tx_id in acknowledged:
            assert _has_tx(node, tx_id), (node.name, tx_id)
    assert "ok" in _verify(app_id).lower()

    # 4. restart every node and every ordering member at once
    names = [n.name for n in _nodes(app_id)] + [m.name for m in OrderingMember.objects.all()]
    endpoints = {n.name: n.endpoint for n in _nodes(app_id)}
    for name in names:
        docker_engine.containers.get(name).restart(timeout=0)
    wait_for(
        lambda: (
            all("error" not in reconcile_region(r.code) for r in regions) and all(_chain(n) for n in _nodes(app_id))
        ),
        timeout=60,
        interval=1,
        message="nodes observed again",
    )
    assert {n.name: n.endpoint for n in _nodes(app_id)} == endpoints  # each node keeps its host port
    after = wait_for(
        lambda: _all_at_same_head(app_id, at_least=head["height"]),
        timeout=120,
        message="the chain back after a full restart",
    )
    assert after["head_hash"] == head["head_hash"] or after["height"] > head["height"]
    put(99)
    wait_for(lambda: _all_at_same_head(app_id, at_least=after["height"] + 1), timeout=60, message="the last block")
    for node in _nodes(app_id):
        for tx_id in acknowledged:
            assert _has_tx(node, tx_id), (node.name, tx_id)
    assert "ok" in _verify(app_id).lower()

    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    deleted = operation_done(api, resp["Location"], timeout=120)
    assert deleted["status"] == "succeeded", (deleted["last_error"], deleted["log"][-6:])


def test_a_node_away_beyond_the_etcd_window_catches_up_from_a_peer(
    transactional_db, live_server, make_regions, worker_factory, docker_engine, ledger_image
):
    regions = make_regions("docker", count=2)
    # etcd keeps the last 3 blocks; the stopped node must stay away (no healing from events)
    worker_factory(regions, env={"BSN_ETCD_BLOCK_WINDOW": "3", "BSN_HEAL_ON_EVENTS": "false"})
    api = _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))
    resp = api.post("/api/v1/apps", {"name": "peers", "regions": [r.code for r in regions]}, format="json")
    assert resp.status_code == 202, resp.content
    app_id = resp.json()["app"]
    assert operation_done(api, resp["Location"], timeout=180)["status"] == "succeeded"
    nodes = _nodes(app_id)
    for node, other in ((nodes[0], nodes[1]), (nodes[1], nodes[0])):
        env = docker_engine.containers.get(node.name).attrs["Config"]["Env"]
        assert f"BSN_PEERS=http://{other.name}:8080" in env  # by container name: one engine
        assert "BSN_ETCD_BLOCK_WINDOW=3" in env

    private, public = generate_key()
    resp = api.post(f"/api/v1/apps/{app_id}/users", {"name": "alice", "public_key": public}, format="json")
    assert resp.status_code == 201, resp.content
    token = api._credentials["HTTP_AUTHORIZATION"].split()[1]
    client = Client(live_server.url, token, app_id, "alice", private)
    # Read-your-writes: the moment the API confirmed alice, every node takes her
    # transactions, also a node whose watch has not delivered her block yet (it catches
    # up with the ordering before it would say "unknown signer").
    for n, node in enumerate(_nodes(app_id)):
        reply = node_post(node, "/tx", client.sign("kv", "put", {"key": f"first-{n}", "value": n}))
        assert reply.status == 200 and reply.body["status"] == "committed", reply.body
    proposer_id = wait_for(lambda: (_chain(nodes[0]) or {}).get("proposer"), timeout=30, message="a proposer")
    away = next(n for n in nodes if str(n.pk) != proposer_id)
    away_height = _chain(away)["height"]
    docker_engine.containers.get(away.name).stop(timeout=5)

    acknowledged = []
    for i in range(8):  # one block each: the blocks right after away_height leave etcd
        receipt = _submit_until_acknowledged(client, client.sign("kv", "put", {"key": f"p{i}", "value": i}))
        assert receipt["status"] == "committed", receipt
        acknowledged.append(receipt["tx_id"])
    assert receipt["height"] > away_height + 3 + 1

    docker_engine.containers.get(away.name).start()
    wait_for(
        lambda: all("error" not in reconcile_region(r.code) for r in regions) and _chain(_nodes(app_id)[0]),
        timeout=60,
        interval=1,
        message="the node observed again",
    )
    wait_for(lambda: _all_at_same_head(app_id, at_least=receipt["height"]), timeout=60, message="caught up")
    logs = docker_engine.containers.get(away.name).logs().decode()
    assert "older than the etcd window from peers" in logs, logs[-2000:]
    away = LedgerNode.objects.get(pk=away.pk)
    for tx_id in acknowledged:
        assert _has_tx(away, tx_id), tx_id
    assert "ok" in _verify(app_id).lower()

    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    assert operation_done(api, resp["Location"], timeout=120)["status"] == "succeeded"
    left = docker_engine.networks.list(filters={"label": f"io.bsn.app={app_id}"})
    assert left == [], [n.name for n in left]  # sibling links undone, every app network removed

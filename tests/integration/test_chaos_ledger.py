"""Chaos (issue 9): `docker kill` and `docker rm -f` ledger nodes and ordering members
behind the platform's back while transactions flow through the gateway.

A 3-node etcd app; one writer thread submits signed puts without pause (each envelope
retried until the gateway answers with a receipt, as a client would). Each round picks a
victim at random — a node killed, a node's container removed, an ordering member killed
or removed — and waits until the platform has restored it: nodes through engine events
(healing.py), members through the periodic pass's `ordering_heal` (called here, as the
beat would; members are not healed from events). At most one member is down at a time,
so the ordering keeps its quorum. At the end: every node at one head, every acknowledged
transaction on every node (the invariant, checked as code), the chain verifies.

`make test` runs CHAOS_ROUNDS=2 rounds; `make chaos` more (figures: docs/testing.md)."""

from __future__ import annotations

import os
import random
import threading
import time

import docker.errors
import pytest

from apps.chainapps.models import LedgerNode
from apps.ordering.models import OrderingMember
from apps.ordering.services import ordering_heal
from bsn.client import Client, generate_key
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import operation_done, wait_for
from tests.integration.test_replicated_ledger import _all_at_same_head, _has_tx, _nodes, _verify

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "2"))
WRITES_MAX = 5000  # the writer's bound in count (and it stops when the rounds end)


def _running(engine, name: str) -> bool:
    try:
        return engine.containers.get(name).status == "running"
    except docker.errors.NotFound:
        return False  # removed, not recreated yet


def test_nodes_and_members_killed_or_removed_while_transactions_flow_lose_nothing(
    transactional_db, live_server, make_regions, worker_factory, docker_engine, ledger_image
):
    regions = make_regions("docker", count=3)
    worker_factory(regions)  # event healing on (the default)
    api = _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))
    resp = api.post("/api/v1/apps", {"name": "chaos", "regions": [r.code for r in regions]}, format="json")
    assert resp.status_code == 202, resp.content
    app_id = resp.json()["app"]
    assert operation_done(api, resp["Location"], timeout=180)["status"] == "succeeded"
    private, public = generate_key()
    added = api.post(f"/api/v1/apps/{app_id}/users", {"name": "alice", "public_key": public}, format="json")
    assert added.status_code == 201, added.content
    token = api._credentials["HTTP_AUTHORIZATION"].split()[1]
    client = Client(live_server.url, token, app_id, "alice", private)

    acknowledged: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        for i in range(WRITES_MAX):
            if stop.is_set():
                return
            envelope = client.sign("kv", "put", {"key": f"k{i % 50}", "value": i})
            deadline = time.monotonic() + 90
            while not stop.is_set() or time.monotonic() < deadline:
                try:
                    receipt = client.submit_envelope(envelope)
                except Exception:  # noqa: BLE001 - 503/504 while a node or the ordering heals: resend
                    receipt = None
                if receipt and receipt.get("status") == "committed":
                    acknowledged.append(receipt["tx_id"])
                    break
                if receipt and receipt.get("status") == "failed":
                    failures.append(str(receipt))
                    break
                if time.monotonic() > deadline:
                    failures.append(f"put {i} never acknowledged")
                    return
                time.sleep(0.2)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "9")))
    tally = {"rounds": 0, "node kill": 0, "node rm -f": 0, "member kill": 0, "member rm -f": 0}
    restore_s: list[float] = []
    try:
        wait_for(lambda: len(acknowledged) >= 5, timeout=60, message="the first writes")
        for _ in range(ROUNDS):
            for what in rng.sample(["node kill", "node rm -f", "member kill", "member rm -f"], 2):
                before = len(acknowledged)
                if what.startswith("node"):
                    victim = rng.choice(_nodes(app_id)).name
                else:
                    victim = rng.choice(list(OrderingMember.objects.order_by("index"))).name
                container = docker_engine.containers.get(victim)
                started = time.monotonic()
                if what.endswith("kill"):
                    container.kill()
                else:
                    container.remove(force=True)  # the volume stays: data kept, as rm -f does
                if what.startswith("member"):
                    time.sleep(1)
                    wait_for(
                        lambda: ordering_heal()["state"] == "healthy", timeout=90, interval=1, message="members healed"
                    )
                wait_for(
                    lambda victim=victim: _running(docker_engine, victim),
                    timeout=60,
                    interval=0.2,
                    message=f"{victim} running again",
                )
                wait_for(
                    lambda: LedgerNode.objects.filter(app_id=app_id, state="running").count() == 3,
                    timeout=60,
                    interval=0.2,
                    message="every node verified again",
                )
                restore_s.append(time.monotonic() - started)
                wait_for(lambda before=before: len(acknowledged) > before + 3, timeout=90, message="writes continue")
                tally[what] += 1
            tally["rounds"] += 1
    finally:
        stop.set()
        thread.join(120)
    assert not failures, failures[:5]
    top = wait_for(lambda: _all_at_same_head(app_id, at_least=1), timeout=120, message="every node at one head")
    lost = [(n.name, t) for n in _nodes(app_id) for t in acknowledged if not _has_tx(n, t)]
    assert lost == []  # no acknowledged transaction lost, on any node
    assert "ok" in _verify(app_id).lower()
    print(
        f"\nchaos ledger: {tally}, {len(acknowledged)} acknowledged, 0 lost, head {top['height']}, "
        f"restored in {min(restore_s):.1f}-{max(restore_s):.1f} s"
    )
    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    assert operation_done(api, resp["Location"], timeout=120)["status"] == "succeeded"

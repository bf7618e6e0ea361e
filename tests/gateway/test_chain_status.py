"""App status from the chain: the reconciler reads each running node's /chain."""

from __future__ import annotations

import pytest

from apps.chainapps import reconcile
from apps.chainapps.models import ChainApp, LedgerNode
from apps.chainapps.reconcile import chain_verdict, reconcile_region
from apps.runtime.spec import NodeStatus
from tests.api.conftest import finish_open_operations, make_app
from tests.gateway.conftest import attach_sim

pytestmark = pytest.mark.django_db


def _chain(height, head, proposer="n1"):
    return {"height": height, "head_hash": head, "proposer": proposer}


@pytest.mark.parametrize(
    "ordering, chains, ok, why",
    [
        ("etcd", [_chain(5, "a"), _chain(5, "a"), _chain(5, "a")], True, ""),
        ("etcd", [_chain(5, "a"), _chain(4, "b")], True, ""),  # within the lag of 2
        ("etcd", [_chain(5, "a"), _chain(2, "b")], False, "behind"),
        ("etcd", [_chain(5, "a"), _chain(5, "b")], False, "disagree"),
        ("etcd", [_chain(5, "a", ""), _chain(5, "a", None)], False, "no proposer"),
        ("solo", [_chain(0, "", None)], True, ""),
        ("etcd", [_chain(5, "a"), None], False, "does not answer"),
        ("solo", [], True, ""),
    ],
)
def test_chain_verdict(ordering, chains, ok, why):
    verdict, reason = chain_verdict(ordering=ordering, chains=chains, max_lag=2)
    assert verdict is ok and why in reason


def test_zero_lag_wants_the_same_height():
    assert chain_verdict(ordering="etcd", chains=[_chain(5, "a"), _chain(4, "b")], max_lag=0)[0] is False


def test_status_running_with_everything_healthy_only():
    app = ChainApp(desired_state="running", status="running")
    assert app.derive_status(["running", "running"], chain_ok=True) == "running"
    assert app.derive_status(["running", "running"], chain_ok=False) == "degraded"
    assert app.derive_status(["running", "missing"], chain_ok=True) == "degraded"


def test_a_node_being_healed_never_makes_the_app_failed():
    """No node healthy is "degraded" while the platform restores them; "failed" only
    when an operation gave up, and it stays until a node is healthy again."""
    healing = ChainApp(desired_state="running", status="running")
    assert healing.derive_status(["missing"]) == "degraded"
    assert healing.derive_status(["unhealthy", "unknown"]) == "degraded"
    starting = ChainApp(desired_state="running", status="provisioning")
    assert starting.derive_status(["pending"]) == "provisioning"
    given_up = ChainApp(desired_state="running", status="failed")
    assert given_up.derive_status(["missing"]) == "failed"
    assert given_up.derive_status(["running"]) == "running"


class ListingDriver:
    """A driver that reports the app's nodes as running at their sims' endpoints."""

    name = "docker"

    def __init__(self, endpoints):
        self.endpoints = endpoints

    def list_nodes(self, *, installation_id):
        return [NodeStatus(name=n, state="running", runtime_id="c", endpoint=e) for n, e in self.endpoints.items()]


@pytest.fixture
def pair(owner, regions, monkeypatch):
    app = make_app(owner, "pair", regions=("cn-beijing", "cn-shanghai"))
    finish_open_operations(app.pk)
    nodes = list(app.nodes.order_by("region__code"))
    sims = [attach_sim(n) for n in nodes]
    endpoints = {n.name: s.endpoint for n, s in zip(nodes, sims, strict=True)}
    monkeypatch.setattr(reconcile, "driver_for_region", lambda region: ListingDriver(endpoints))
    yield app, sims
    for s in sims:
        s.close()


def _reconcile(app) -> str:
    reconcile_region("cn-beijing")
    reconcile_region("cn-shanghai")
    return ChainApp.objects.get(pk=app.pk).status


def test_reconciler_running_when_nodes_agree_and_degraded_when_one_lags(pair, settings):
    app, (first, second) = pair
    settings.BSN_CHAIN_MAX_LAG = 0
    first.commit([])
    second.blocks = list(first.blocks)  # same chain
    assert _reconcile(app) == "running"
    node = LedgerNode.objects.get(pk=first.node_id)
    assert node.chain_height == 1 and node.chain_head == first.head and node.chain_seen_at
    assert node.chain_proposer == first.node_id

    first.commit([])  # second is now behind
    assert _reconcile(app) == "degraded"
    second.blocks = list(first.blocks)  # caught up
    assert _reconcile(app) == "running"


def test_reconciler_degraded_without_a_proposer_for_etcd_apps(pair):
    app, (first, second) = pair
    assert app.ordering == "etcd"
    for sim in (first, second):
        facts = {"height": 0, "head_hash": "0" * 64, "proposer": None}
        sim.node.routes[("GET", "/chain")] = (200, facts)
        sim.node.routes[("GET", "/health")] = (200, {"status": "ok", **facts})
    assert _reconcile(app) == "degraded"


@pytest.mark.parametrize("facts_in_health", [True, False], ids=["node", "node from before the facts"])
def test_a_pass_calls_a_node_once_when_its_health_carries_the_chain_facts(one_node_apps, facts_in_health):
    """A node's /health carries its chain facts (issue 9: one call a node, not /health then
    /chain); a node that does not send them (an older image) is asked for its /chain."""
    (app,) = one_node_apps(1)
    ledger = one_node_apps.sims[-1]
    ledger.health_facts = facts_in_health
    ledger.commit([])
    ledger.commit([])
    ledger.node.requests.clear()
    reconcile_region("cn-beijing")
    paths = [path for _, path, _ in ledger.node.requests]
    assert paths == (["/health"] if facts_in_health else ["/health", "/chain"])
    node = LedgerNode.objects.get(app=app)
    assert (node.chain_height, node.chain_head, node.chain_proposer) == (2, ledger.head, ledger.node_id)
    assert ChainApp.objects.get(pk=app.pk).status == ChainApp.Status.RUNNING


@pytest.mark.parametrize("who", ["stranger", "other node"])
def test_an_impostor_on_a_nodes_port_is_never_healthy_nor_running(pair, who):
    """Something else answers 200 on a node's published port (a leftover process, another
    app's or installation's node on a freed port): the reconciler does not believe it."""
    from apps.chainapps.node_auth import node_auth
    from apps.runtime.base import TransientRuntimeError
    from apps.runtime.health import probe, wait_healthy
    from tests.fakenode import FakeNode
    from tests.gateway.conftest import speak_as

    app, (first, second) = pair
    assert _reconcile(app) == "running"
    node = LedgerNode.objects.get(pk=first.node_id)
    port = int(first.endpoint.rsplit(":", 1)[1])
    first.close()
    impostor = FakeNode(
        lambda method, path, body: (200, {"status": "ok", "node_id": str(node.pk), "app_id": str(app.pk), "height": 9}),
        port=port,
    )
    if who == "other node":  # it proves an identity, but not this node's
        speak_as(impostor, LedgerNode.objects.get(pk=second.node_id))
    try:
        assert not probe(first.endpoint, "/health", auth=node_auth(node))
        with pytest.raises(TransientRuntimeError, match="not healthy"):
            wait_healthy(first.endpoint, "/health", 0.3, auth=node_auth(node))
        assert _reconcile(app) == "degraded"
        assert LedgerNode.objects.get(pk=node.pk).state == LedgerNode.State.UNHEALTHY
        assert any(path == "/health" for _, path, _ in impostor.requests) or who == "other node"
    finally:
        impostor.close()


@pytest.fixture
def one_node_apps(owner, regions, monkeypatch):
    """``make(n)``: n more one-node apps on cn-beijing, each node a simulated ledger that
    the listing driver reports running."""
    endpoints, sims = {}, []

    def make(count: int) -> list:
        made = []
        for _ in range(count):
            app = make_app(owner, f"one-{len(sims)}")
            finish_open_operations(app.pk)
            node = app.nodes.get()
            sims.append(attach_sim(node))
            endpoints[node.name] = sims[-1].endpoint
            made.append(app)
        return made

    monkeypatch.setattr(reconcile, "driver_for_region", lambda region: ListingDriver(endpoints))
    make.sims = sims
    yield make
    for sim in sims:
        sim.close()


def _pass_queries() -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        report = reconcile_region("cn-beijing")
    assert "error" not in report and report["restarted"] == 0, report
    return len(ctx.captured_queries)


def test_a_pass_asks_the_database_as_often_for_many_nodes_as_for_few(one_node_apps):
    """The pass over a region reads its nodes, their apps and their chains' nodes in a few
    queries and writes what it observed in one UPDATE per kind (issue 9: 200 nodes took
    1,000 statements), whatever the number of nodes; every node still gets its facts."""
    one_node_apps(2)
    _pass_queries()  # the first pass records the nodes' endpoints
    few = _pass_queries()
    apps = one_node_apps(5)
    _pass_queries()
    assert _pass_queries() == few
    for app in apps:
        node = LedgerNode.objects.get(app=app)
        assert node.state == LedgerNode.State.RUNNING and node.chain_seen_at and node.last_seen_at
        assert ChainApp.objects.get(pk=app.pk).status == ChainApp.Status.RUNNING


@pytest.mark.parametrize("chain_ok", [True, False])
def test_apps_refresh_status_at_once_is_app_refresh_status_of_each(owner, regions, chain_ok):
    """The reconciler's one-shot status update gives every app what the per-app one gives."""
    from apps.chainapps.provisioning import app_refresh_status, apps_refresh_status

    cases = [
        ("running", "running", ["running", "running"]),
        ("running", "running", ["running", "missing"]),
        ("running", "failed", ["unhealthy", "missing"]),
        ("running", "failed", ["running", "missing"]),
        ("running", "provisioning", ["pending", "pending"]),
        ("running", "running", ["removed", "removed"]),
        ("stopped", "running", ["running", "stopped"]),
        ("stopped", "stopping", ["stopped", "stopped"]),
        ("deleted", "deleting", ["removed", "removed"]),
        ("deleted", "deleting", ["removed", "running"]),
    ]
    apps = []
    for i, (desired, status, states) in enumerate(cases):
        app = make_app(owner, f"case-{i}", regions=("cn-beijing", "cn-shanghai"))
        finish_open_operations(app.pk)
        ChainApp.objects.filter(pk=app.pk).update(desired_state=desired, status=status, status_reason="gave up")
        for node, state in zip(app.nodes.order_by("region__code"), states, strict=True):
            LedgerNode.objects.filter(pk=node.pk).update(state=state)
        apps.append(app.pk)

    def statuses():
        return {pk: (a.status, a.status_reason) for pk, a in ChainApp.objects.in_bulk(apps).items()}

    def fresh():
        ChainApp.objects.filter(pk__in=apps).update(status_reason="gave up")
        for i, (_, status, _) in enumerate(cases):
            ChainApp.objects.filter(pk=apps[i]).update(status=status)
        return [ChainApp.objects.get(pk=pk) for pk in apps]

    for app in fresh():
        app_refresh_status(app, chain_ok=chain_ok)
    each = statuses()
    returned = apps_refresh_status(fresh(), chain_ok=dict.fromkeys(apps, chain_ok))
    assert statuses() == each
    assert returned == {pk: status for pk, (status, _) in each.items()}
    seen = {status for status, _ in each.values()}
    assert seen >= {"degraded", "failed", "provisioning", "stopping", "deleting"}
    assert ("running" in seen) is chain_ok


def test_a_pass_never_overwrites_a_state_a_step_recorded_meanwhile(one_node_apps, monkeypatch):
    """The pass loads a node still `pending` and sees it booting (not healthy yet); its
    provision step verifies it meanwhile and records it `running`. The pass's older
    observation must not turn it back (the gateway then found no running node right after
    the operation succeeded)."""
    (app,) = one_node_apps(1)
    node = LedgerNode.objects.get(app=app)
    LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.PENDING)
    real = reconcile.health_and_chain

    def booting_then_verified(*args, **kwargs):
        LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.RUNNING)  # the step, meanwhile
        return False, None

    monkeypatch.setattr(reconcile, "health_and_chain", booting_then_verified)
    reconcile_region("cn-beijing")
    assert LedgerNode.objects.get(pk=node.pk).state == LedgerNode.State.RUNNING
    monkeypatch.setattr(reconcile, "health_and_chain", real)
    LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.UNHEALTHY)
    reconcile_region("cn-beijing")  # the next pass records what it sees
    assert LedgerNode.objects.get(pk=node.pk).state == LedgerNode.State.RUNNING

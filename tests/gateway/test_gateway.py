"""Gateway routes: forwarding to a healthy node, failover, and node errors as problem details."""

from __future__ import annotations

import socket

import pytest

from apps.chainapps.models import LedgerNode
from bsn.client import Client
from tests.api.conftest import assert_problem
from tests.fakenode import FakeNode
from tests.gateway.conftest import speak_as

pytestmark = pytest.mark.django_db


def url(app, path: str) -> str:
    return f"/api/v1/apps/{app.pk}/{path}"


@pytest.fixture
def signer(app, alice_key) -> Client:
    """Signs as alice (no HTTP: tests post its envelopes with the API test client). Tests
    against the SimLedger also ask for ``alice`` so that the ledger knows her key."""
    return Client("http://unused", "token", str(app.pk), "alice", alice_key[0])


@pytest.fixture
def fake(app):
    """A scripted node in place of the app's node."""
    node = FakeNode()
    speak_as(node, app.nodes.get())
    LedgerNode.objects.filter(app=app).update(state=LedgerNode.State.RUNNING, endpoint=node.endpoint)
    yield node
    node.close()


def _closed_port_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed


def test_submit_and_read_back(owner_client, app, sim, alice, signer):
    envelope = signer.sign("kv", "put", {"key": "greeting", "value": "ni hao"})
    resp = owner_client.post(url(app, "transactions"), envelope, format="json")
    assert resp.status_code == 200, resp.content
    receipt = resp.json()
    assert receipt["status"] == "committed" and receipt["height"] == 2  # block 1 registered alice
    tx = owner_client.get(url(app, f"transactions/{receipt['tx_id']}")).json()
    assert tx["tx"] == envelope and tx["receipt"] == receipt
    block = owner_client.get(url(app, f"blocks/{receipt['height']}")).json()
    assert block["txs"] == [envelope]
    state = owner_client.get(url(app, "state/kv/greeting")).json()
    assert state == {"contract": "kv", "key": "greeting", "value": "ni hao"}
    assert owner_client.get(url(app, "state/greeting")).json() == state  # the app's own contract
    chain = owner_client.get(url(app, "chain")).json()
    assert chain["height"] == 2 and chain["head_hash"] == block["hash"]


def test_batch(owner_client, app, sim, alice, signer):
    good = signer.sign("kv", "put", {"key": "a", "value": 1})
    forged = signer.sign("kv", "put", {"key": "b", "value": 2})
    forged["tx"]["args"]["value"] = 3  # signature no longer matches
    resp = owner_client.post(url(app, "transactions"), {"txs": [good, forged]}, format="json")
    assert resp.status_code == 200, resp.content
    receipts = resp.json()["receipts"]
    assert receipts[0]["status"] == "committed"
    assert receipts[1] == {"status": "rejected", "error": "bad_signature"}


def test_key_with_odd_characters_is_passed_encoded(owner_client, app, sim, alice, signer):
    owner_client.post(
        url(app, "transactions"), signer.sign("kv", "put", {"key": "a b?c#d", "value": "x"}), format="json"
    )
    resp = owner_client.get(url(app, "state/kv/a%20b%3Fc%23d"))
    assert resp.status_code == 200 and resp.json()["value"] == "x"


def test_rejection_keeps_the_nodes_reason_code(owner_client, app, sim, alice, signer):
    envelope = signer.sign("kv", "put", {"key": "k", "value": "v"})
    envelope["tx"]["args"]["value"] = "tampered"
    body = assert_problem(owner_client.post(url(app, "transactions"), envelope, format="json"), 400, "bad_signature")
    assert body["type"].endswith("/bad_signature")
    replay = signer.sign("kv", "put", {"key": "k", "value": "v"})
    assert owner_client.post(url(app, "transactions"), replay, format="json").status_code == 200
    assert_problem(owner_client.post(url(app, "transactions"), replay, format="json"), 400, "replayed_nonce")


def test_wrong_app_and_malformed_never_reach_a_node(owner_client, app, fake, signer):
    envelope = signer.sign("kv", "put", {"key": "k", "value": "v"})
    envelope["tx"]["app"] = "00000000-0000-0000-0000-000000000000"
    body = assert_problem(owner_client.post(url(app, "transactions"), envelope, format="json"), 400, "wrong_app")
    assert str(app.pk) in body["detail"]
    batch = {"txs": [signer.sign("kv", "put", {"key": "k", "value": "v"}), envelope]}
    body = assert_problem(owner_client.post(url(app, "transactions"), batch, format="json"), 400, "wrong_app")
    assert body["detail"].startswith("txs[1]")
    assert_problem(owner_client.post(url(app, "transactions"), {"txs": []}, format="json"), 400, "malformed")
    assert_problem(owner_client.post(url(app, "transactions"), ["x"], format="json"), 400, "malformed")
    assert fake.requests == []


def test_not_found_on_the_chain_is_404(owner_client, app, sim):
    assert_problem(owner_client.get(url(app, "transactions/" + "ab" * 32)), 404, "not-found")
    assert_problem(owner_client.get(url(app, "blocks/99")), 404, "not-found")
    body = assert_problem(owner_client.get(url(app, "state/kv/nothing")), 404, "not-found")
    assert "nothing" in body["detail"]


def test_no_healthy_node_is_503_naming_the_app(owner_client, app, fake):
    LedgerNode.objects.filter(app=app).update(state=LedgerNode.State.STOPPED)
    body = assert_problem(owner_client.get(url(app, "chain")), 503, "no-healthy-node")
    assert app.name in body["detail"] and str(app.pk) in body["detail"]
    assert body["app"] == str(app.pk)
    assert fake.requests == []


def test_unreachable_node_is_skipped_for_the_next(owner_client, owner, regions, fake):
    from tests.api.conftest import finish_open_operations, make_app

    app = make_app(owner, "two", regions=("cn-beijing", "cn-shanghai"))
    finish_open_operations(app.pk)
    dead, alive = app.nodes.order_by("region__code")
    LedgerNode.objects.filter(pk=dead.pk).update(state="running", endpoint=_closed_port_endpoint())
    LedgerNode.objects.filter(pk=alive.pk).update(state="running", endpoint=fake.endpoint)
    speak_as(fake, alive)
    fake.routes[("GET", "/chain")] = (200, {"height": 7})
    for _ in range(6):  # random order: both orders get exercised
        assert owner_client.get(f"/api/v1/apps/{app.pk}/chain").json() == {"height": 7}
    LedgerNode.objects.filter(pk=alive.pk).update(endpoint=_closed_port_endpoint())
    body = assert_problem(owner_client.get(f"/api/v1/apps/{app.pk}/chain"), 503, "no-healthy-node")
    assert "cn-beijing" in body["detail"] and "cn-shanghai" in body["detail"]


def test_slow_node_is_504(owner_client, app, fake, signer, settings):
    settings.BSN_GATEWAY_SUBMIT_TIMEOUT = 0.2
    fake.delay = 1.0
    fake.routes[("POST", "/tx")] = (200, {"status": "committed"})
    body = assert_problem(
        owner_client.post(url(app, "transactions"), signer.sign("kv", "put", {"key": "k", "value": 1}), format="json"),
        504,
        "node-timeout",
    )
    assert "unknown" in body["detail"] and "same signed transaction" in body["detail"]


INTERNAL = "ordering service unavailable: http://bsn-1234abcd-etcd-0:2379: [Errno 111] refused (/data/etcd)"


@pytest.mark.parametrize(
    "node_reply, status, code",
    [
        ((503, {"error": "ordering_unavailable", "detail": INTERNAL}), 503, "ordering-unavailable"),
        ((500, {"error": "boom", "detail": INTERNAL}), 502, "node-error"),
        ((504, {"error": "timeout", "detail": INTERNAL}), 504, "node-timeout"),
        ((400, {"error": "stale_timestamp", "detail": "too old"}), 400, "stale_timestamp"),
        ((400, {"error": "unknown_signer", "detail": "who?"}), 400, "unknown_signer"),
    ],
)
def test_node_errors_map_to_problems(owner_client, app, fake, signer, node_reply, status, code, caplog):
    fake.routes[("POST", "/tx")] = node_reply
    resp = owner_client.post(
        url(app, "transactions"), signer.sign("kv", "put", {"key": "k", "value": 1}), format="json"
    )
    body = assert_problem(resp, status, code)
    if status == 503:
        assert resp["Retry-After"]
    if status >= 500:  # the node's words stay inside: the tenant gets a reference, staff the detail
        assert "etcd-0" not in resp.content.decode() and "/data" not in resp.content.decode()
        assert body["ref"] in body["detail"]
        assert any(body["ref"] in r.getMessage() and INTERNAL in r.getMessage() for r in caplog.records)


def test_roles_viewer_reads_developer_submits(client_with_role, app, sim, alice, signer):
    viewer = client_with_role("viewer")
    assert viewer.get(url(app, "chain")).status_code == 200
    envelope = signer.sign("kv", "put", {"key": "k", "value": "v"})
    assert_problem(viewer.post(url(app, "transactions"), envelope, format="json"), 403)
    assert client_with_role("developer").post(url(app, "transactions"), envelope, format="json").status_code == 200


def test_another_tenants_app_is_404_before_any_node_is_contacted(outsider_client, app, fake, signer):
    envelope = signer.sign("kv", "put", {"key": "k", "value": "v"})
    for resp in (
        outsider_client.post(url(app, "transactions"), envelope, format="json"),
        outsider_client.get(url(app, "chain")),
        outsider_client.get(url(app, "blocks/1")),
        outsider_client.get(url(app, "state/k")),
    ):
        assert_problem(resp, 404, "not-found")
    assert fake.requests == []


def _forger(method, path, body):
    """Answers like a node, to anyone: forged state, every transaction "committed"."""
    if path.startswith("/state/"):
        return 200, {"contract": "kv", "key": "greeting", "value": "forged"}
    if path == "/tx":
        return 200, {"tx_id": "f" * 64, "status": "committed", "height": 1, "index": 0, "events": []}
    return 200, {"status": "ok"}


@pytest.mark.parametrize("credential", [None, "another-nodes-credential-0123456789"])
def test_an_impostor_gets_nothing_through_the_gateway(owner_client, app, sim, alice, signer, credential):
    """A process squatting on the node's port (or another node there, with its own
    credential) is no answer: no forged state, no forged receipt; 503 when it is the
    only node."""
    real = sim.endpoint
    impostor = FakeNode(_forger, credential=credential)
    LedgerNode.objects.filter(app=app).update(endpoint=impostor.endpoint)
    try:
        resp = owner_client.get(url(app, "state/kv/greeting"))
        assert_problem(resp, 503, "no-healthy-node")
        assert b"forged" not in resp.content
        envelope = signer.sign("kv", "put", {"key": "greeting", "value": "real"})
        resp = owner_client.post(url(app, "transactions"), envelope, format="json")
        assert_problem(resp, 503, "no-healthy-node")
        assert b"committed" not in resp.content
        if credential is None:
            assert {path for _, path, _ in impostor.requests} == {"/state/kv/greeting", "/tx"}  # it was asked
        LedgerNode.objects.filter(app=app).update(endpoint=real)
        assert owner_client.post(url(app, "transactions"), envelope, format="json").json()["status"] == "committed"
        assert owner_client.get(url(app, "state/kv/greeting")).json()["value"] == "real"
    finally:
        impostor.close()


def test_the_gateway_moves_from_an_impostor_to_the_real_node(owner_client, owner, regions, alice_key):
    from tests.api.conftest import finish_open_operations, make_app
    from tests.gateway.conftest import attach_sim

    two = make_app(owner, "two-real", regions=("cn-beijing", "cn-shanghai"))
    finish_open_operations(two.pk)
    squatted, real = two.nodes.order_by("region__code")
    sim = attach_sim(real)
    impostor = FakeNode(_forger)
    LedgerNode.objects.filter(pk=squatted.pk).update(state="running", endpoint=impostor.endpoint)
    try:
        sim.kv["greeting"] = "real"
        for _ in range(6):  # random order: both orders get exercised
            resp = owner_client.get(f"/api/v1/apps/{two.pk}/state/kv/greeting")
            assert resp.status_code == 200 and resp.json()["value"] == "real"
    finally:
        impostor.close()
        sim.close()


def test_a_viewers_read_of_a_silent_node_leaves_the_engine_and_keys_to_the_worker(client_with_role, app, monkeypatch):
    """The web process never asks the engine where a node went, nor decrypts a node key or
    the app's etcd credentials for it: it asks the region's worker to look (once)."""
    import apps.chainapps.keys
    import apps.chainapps.provisioning
    import apps.chainapps.reconcile
    import apps.runtime.drivers
    from apps.chainapps import tasks

    def forbidden(*args, **kwargs):
        raise AssertionError("the web process must not do this")

    for module in (apps.runtime.drivers, apps.chainapps.provisioning, apps.chainapps.reconcile):
        monkeypatch.setattr(module, "driver_for_region", forbidden)
    monkeypatch.setattr(apps.chainapps.keys, "key_private", forbidden)
    monkeypatch.setattr("apps.chainapps.node_config.key_private", forbidden)
    enqueued = []
    monkeypatch.setattr(tasks.node_refresh, "apply_async", lambda args, **kw: enqueued.append((args, kw["queue"])))
    node = app.nodes.get()
    LedgerNode.objects.filter(pk=node.pk).update(state="running", endpoint=_closed_port_endpoint())
    viewer = client_with_role("viewer")
    for _ in range(3):
        assert_problem(viewer.get(url(app, "state/kv/greeting")), 503, "no-healthy-node")
    assert enqueued == [((str(node.pk),), node.region.queue)]  # once, to the node's region

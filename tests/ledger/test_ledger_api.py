"""The node's HTTP API, against a real node process on loopback."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bsn.ledger.canonical import canonical
from bsn.ledger.tx import now_ms, tx_id_of
from tests.ledger.helpers import ADMIN, Key, add_user, revoke_user

ALICE = Key("alice")


@pytest.fixture
def node(make_node):
    node = make_node().start()
    assert node.submit(add_user(ALICE)).status == 200
    return node


def test_health_names_the_node(node):
    reply = node.request("GET", "/health")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    body = reply.json()
    identity = body.pop("identity")  # tests/ledger/test_node_auth.py checks the proof
    chain = node.request("GET", "/chain").json()  # the chain facts come along, as /chain gives them
    assert body == {
        "status": "ok",
        "node_id": "node-1",
        "app_id": "app-1",
        "height": 1,
        "head_hash": chain["head_hash"],
        "ordering": "solo",
        "proposer": chain["proposer"],
    }
    assert chain["head_hash"] and chain["proposer"] == "node-1"
    assert (identity["app_id"], identity["node_id"]) == ("app-1", "node-1")
    assert reply.verified


def test_submit_answers_with_the_committed_receipt(node):
    env = ALICE.tx("kv", "put", {"key": "greeting", "value": {"hello": "wörld"}})
    reply = node.submit(env)
    assert reply.status == 200
    receipt = reply.json()
    assert receipt.keys() == {"tx_id", "status", "result", "error", "height", "index", "events"}
    assert (receipt["status"], receipt["height"], receipt["index"]) == ("committed", 2, 0)
    got = node.request("GET", f"/tx/{receipt['tx_id']}")
    assert got.status == 200
    assert got.json() == {"receipt": receipt, "tx": env}
    assert node.state("kv", "greeting").json() == {"contract": "kv", "key": "greeting", "value": {"hello": "wörld"}}
    assert node.query("kv", "get", {"key": "greeting"}).json() == {"result": {"hello": "wörld"}}
    history = node.query("kv", "history", {"key": "greeting"}).json()["result"]
    assert history == [{"height": 2, "tx_id": receipt["tx_id"], "value": {"hello": "wörld"}}]


def test_resubmitting_the_same_envelope_returns_the_same_receipt(node):
    env = ALICE.tx("kv", "put", {"key": "k", "value": 1})
    first = node.submit(env).json()
    assert node.submit(env).json() == first
    assert node.chain()["height"] == 2


def test_failed_execution_is_in_a_block_with_the_error(node):
    reply = node.submit(ALICE.tx("kv", "delete", {"key": "missing"}))
    assert reply.status == 200
    assert reply.json()["status"] == "failed"
    assert "does not exist" in reply.json()["error"]
    assert node.chain()["height"] == 2


def _stale(key):
    return key.tx("kv", "put", {"key": "k", "value": 1}, timestamp=now_ms() - 301_000)


def _bad_sig():
    env = ALICE.tx("kv", "put", {"key": "k", "value": 1})
    return {"tx": {**env["tx"], "args": {"key": "k", "value": 2}}, "sig": env["sig"]}


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: {"tx": {}, "sig": ""}, "malformed"),
        (lambda: ALICE.tx("kv", "put", {"key": "k", "value": 1}, timestamp="now"), "malformed"),
        (lambda: ALICE.tx("kv", "put", {"key": "k", "value": 1}, app="app-2"), "wrong_app"),
        (lambda: Key("mallory").tx("kv", "put", {"key": "k", "value": 1}), "unknown_signer"),
        (_bad_sig, "bad_signature"),
        (lambda: {**ALICE.tx("kv", "put", {"key": "k", "value": 1}), "sig": "AAAA"}, "bad_signature"),
        (lambda: _stale(ALICE), "stale_timestamp"),
        (lambda: ALICE.tx("kv", "put", {"key": "k", "value": 1}, timestamp=now_ms() + 301_000), "stale_timestamp"),
        (lambda: ALICE.tx("kv", "transfer", {"key": "k"}), "unknown_function"),
        (lambda: ALICE.tx("kv", "get", {"key": "k"}), "unknown_function"),
        (lambda: ALICE.tx("asset", "issue", {"to": "x", "amount": 1}), "unknown_function"),
        (lambda: ALICE.tx("kv", "put", {"key": "", "value": 1}), "bad_arguments"),
        (lambda: ALICE.tx("_config", "user.add", {"name": "x", "public_key": ALICE.public}), "bad_arguments"),
    ],
)
def test_every_rejection_reason(node, make, code):
    reply = node.submit(make())
    assert reply.status == 400
    body = reply.json()
    assert body["error"] == code
    assert body["detail"]
    assert node.chain()["height"] == 1  # never in a block


def test_replayed_nonce_is_rejected(node):
    assert node.submit(ALICE.tx("kv", "put", {"key": "k", "value": 1}, nonce="once")).status == 200
    reply = node.submit(ALICE.tx("kv", "put", {"key": "k", "value": 2}, nonce="once"))
    assert reply.status == 400
    assert reply.json()["error"] == "replayed_nonce"


def test_float_anywhere_is_malformed(node):
    env = ALICE.tx("kv", "put", {"key": "k", "value": 1})
    raw = node.request("POST", "/tx", raw=__import__("json").dumps(env).replace('"value": 1', '"value": 1.0').encode())
    assert raw.status == 400 and raw.json()["error"] == "malformed"


def test_a_float_in_one_batch_item_rejects_only_that_item(node):
    good = ALICE.tx("kv", "put", {"key": "f-good", "value": 1})
    bad = ALICE.tx("kv", "put", {"key": "f-bad", "value": 1})
    raw = __import__("json").dumps({"txs": [good, bad]})
    raw = raw[: raw.rindex('"value": 1')] + '"value": 1.5' + raw[raw.rindex('"value": 1') + len('"value": 1') :]
    reply = node.request("POST", "/tx/batch", raw=raw.encode())
    assert reply.status == 200
    receipts = reply.json()["receipts"]
    assert [r["status"] for r in receipts] == ["committed", "rejected"]
    assert receipts[1]["error"] == "malformed" and "float" in receipts[1]["detail"]


def test_batch_keeps_order_and_reports_rejections_per_item(node):
    envs = [ALICE.tx("kv", "put", {"key": f"k{i}", "value": i}) for i in range(5)]
    envs.insert(2, _stale(ALICE))
    envs.append(ALICE.tx("kv", "delete", {"key": "nope"}))
    reply = node.batch(envs)
    assert reply.status == 200
    receipts = reply.json()["receipts"]
    assert [r["status"] for r in receipts] == ["committed"] * 2 + ["rejected"] + ["committed"] * 3 + ["failed"]
    assert receipts[2]["error"] == "stale_timestamp"
    assert [r["tx_id"] for r in receipts[:2]] == [r["tx_id"] for r in receipts[:2]]
    assert node.state("kv", "k4").json()["value"] == 4


def test_batch_body_must_be_an_object_with_txs(node):
    for raw in (b"[]", b'{"txs": 1}', b'{"tx": []}'):
        reply = node.request("POST", "/tx/batch", raw=raw)
        assert (reply.status, reply.json()["error"]) == (400, "malformed")


def test_user_add_and_revoke_take_effect_without_restart(node):
    bob = Key("bob")
    assert node.submit(bob.tx("kv", "put", {"key": "b", "value": 1})).json()["error"] == "unknown_signer"
    assert node.submit(add_user(bob)).status == 200
    assert node.chain()["users"] == ["alice", "bob"]
    assert node.state("_config", "bob").json()["value"] == bob.public
    assert node.submit(bob.tx("kv", "put", {"key": "b", "value": 1})).json()["status"] == "committed"
    assert node.submit(revoke_user("bob")).status == 200
    assert node.submit(bob.tx("kv", "put", {"key": "b", "value": 2})).json()["error"] == "unknown_signer"
    assert node.chain()["users"] == ["alice"]


def test_chain_describes_the_node(node):
    chain = node.chain()
    assert chain.keys() >= {
        "app_id", "node_id", "public_key", "height", "head_hash", "state_root",
        "ordering", "proposer", "is_proposer", "nodes", "users",
    }  # fmt: skip
    assert (chain["ordering"], chain["proposer"], chain["is_proposer"]) == ("solo", "node-1", True)
    assert chain["nodes"] == [{"node_id": "node-1", "public_key": chain["public_key"]}]
    block = node.request("GET", "/blocks/1").json()
    assert block["hash"] == chain["head_hash"]
    assert block["txs"][0]["tx"]["signer"] == ADMIN.name


def test_metrics_are_prometheus_text(node):
    node.submit(ALICE.tx("kv", "delete", {"key": "missing"}))
    node.submit(_stale(ALICE))
    reply = node.request("GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    values = dict(line.split(" ") for line in reply.body.decode().splitlines() if not line.startswith("#"))
    assert values["bsn_tx_committed_total"] == "1"
    assert values["bsn_tx_failed_total"] == "1"
    assert values["bsn_tx_rejected_total"] == "1"
    assert values["bsn_block_height"] == "2"
    assert int(values["bsn_storage_bytes"]) == node.blocks_file.stat().st_size
    assert (values["bsn_is_proposer"], values["bsn_ordering_lag_blocks"]) == ("1", "0")


@pytest.mark.parametrize(
    "path",
    ["/", "/nope", "/kv/x", "/blocks/0", "/blocks/99", "/blocks/x", "/tx/abc", "/tx/" + "0" * 64,
     "/state/kv/missing", "/state/asset/x", "/state/kv", "/state/kv/", "/health/x"],
)  # fmt: skip
def test_unknown_things_are_404_json(node, path):
    reply = node.request("GET", path)
    assert reply.status == 404
    assert reply.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/health", "GET"),
        ("GET", "/tx", "POST"),
        ("PUT", "/tx/batch", "POST"),
        ("DELETE", "/blocks/1", "GET"),
        ("GET", "/query", "POST"),
        ("POST", "/state/kv/a", "GET"),
    ],
)
def test_wrong_method_is_405(node, method, path, allow):
    reply = node.request(method, path, raw=b"{}")
    assert reply.status == 405
    assert reply.headers["Allow"] == allow
    assert reply.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"x"', b'{"tx": NaN}', b"\xff\xfe"])
def test_bad_body_is_400(node, raw):
    reply = node.request("POST", "/tx", raw=raw)
    assert reply.status == 400
    assert reply.json()["error"] == "malformed"


def test_query_errors(node):
    assert node.query("kv", "put", {"key": "k"}).json()["error"] == "unknown_function"
    assert node.query("notary", "lookup", {"hash": "x"}).json()["error"] == "unknown_function"
    assert node.query("kv", "get", {}).json()["error"] == "bad_arguments"
    assert node.request("POST", "/query", {"contract": "kv"}).json()["error"] == "malformed"


def test_body_limits(node):
    big = b'{"tx": "' + b"x" * (1024 * 1024) + b'"}'
    reply = node.request("POST", "/tx", raw=big)
    assert (reply.status, reply.json()["error"]) == (413, "too_large")
    limit = 256 * 1024  # BSN_TX_MAX_BYTES default: the canonical envelope
    ts = now_ms()
    empty = ALICE.tx("kv", "put", {"key": "big", "value": ""}, nonce="fit", timestamp=ts)
    value = "x" * (limit - len(canonical(empty)))
    fits = ALICE.tx("kv", "put", {"key": "big", "value": value}, nonce="fit", timestamp=ts)
    assert len(canonical(fits)) == limit
    assert node.submit(fits).status == 200
    over = ALICE.tx("kv", "put", {"key": "big", "value": "x" * limit})
    reply = node.submit(over)
    assert (reply.status, reply.json()["error"]) == (400, "too_large")
    assert "262144" in reply.json()["detail"]
    assert node.request("GET", f"/tx/{tx_id_of(over['tx'])}").status == 404  # never in a block
    batch = [ALICE.tx("kv", "put", {"key": f"b{i}", "value": "y" * 200_000}) for i in range(11)]
    reply = node.batch(batch)
    assert (reply.status, reply.json()["error"]) == (413, "too_large")  # over 2 MiB
    assert node.batch(batch[:10]).status == 200
    many = [ALICE.tx("kv", "put", {"key": "m", "value": i}) for i in range(1001)]
    reply = node.batch(many)
    assert (reply.status, reply.json()["error"]) == (413, "too_large")
    assert "1000 envelopes" in reply.json()["detail"]


def test_malformed_request_line_gets_json_error(node):
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(b"NONSENSE\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):  # the node closes the connection after an error
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b'"error"' in body


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(b"Authorization: BSN1 1:" + b"0" * 32 + b":" + b"0" * 64 + b"\r\n", b"413"), (b"", b"401")],
)
def test_huge_declared_body_is_refused_without_reading_it(node, authorization, status):
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(b"POST /tx HTTP/1.1\r\nHost: x\r\n" + authorization + b"Content-Length: 1000000000\r\n\r\n{")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 " + status)  # a stranger is refused before the size is looked at
    assert b"Connection: close" in data


def test_concurrent_submissions_all_land(node):
    envs = [ALICE.tx("kv", "put", {"key": f"k{i}", "value": i}) for i in range(200)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda e: node.submit(e).status, envs))
    assert statuses == [200] * 200
    assert node.request("GET", "/metrics").body.count(b"bsn_tx_committed_total 201\n") == 1


def test_timeout_answers_504_with_the_tx_id_then_it_commits(make_node):
    node = make_node(BSN_BLOCK_MAX_WAIT_MS="1500", BSN_TX_WAIT_MS="200").start()
    env = add_user(ALICE)
    reply = node.submit(env)
    assert reply.status == 504
    tx_id = reply.json()["tx_id"]
    assert node.request("GET", f"/tx/{tx_id}").status == 404
    deadline = time.monotonic() + 5
    while node.request("GET", f"/tx/{tx_id}").status != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.request("GET", f"/tx/{tx_id}").json()["receipt"]["status"] == "committed"


def test_sigterm_stops_fast_and_cleanly(node):
    started = time.monotonic()
    assert node.stop() == 0
    assert time.monotonic() - started < 1.5
    assert "stopped" in node.stderr


def test_a_batch_with_duplicates_and_conflicts_inside_it(node):
    """Checks made for the whole batch at once still decide each item on its own."""
    first = ALICE.tx("kv", "put", {"key": "dup", "value": 1}, nonce="batch-nonce")
    same_nonce = ALICE.tx("kv", "put", {"key": "dup", "value": 2}, nonce="batch-nonce")
    stranger = Key("mallory").tx("kv", "put", {"key": "m", "value": 1})
    forged = ALICE.tx("kv", "put", {"key": "forged", "value": 1})
    forged = {"tx": forged["tx"], "sig": ALICE.tx("kv", "put", {"key": "other", "value": 1})["sig"]}
    last = ALICE.tx("kv", "put", {"key": "last", "value": 3})
    reply = node.batch([first, first, same_nonce, stranger, forged, last])
    assert reply.status == 200
    receipts = reply.json()["receipts"]
    statuses = [r["status"] for r in receipts]
    assert statuses == ["committed", "committed", "rejected", "rejected", "rejected", "committed"]
    assert receipts[0]["tx_id"] == receipts[1]["tx_id"]
    assert [r.get("error") for r in receipts[2:5]] == ["replayed_nonce", "unknown_signer", "bad_signature"]
    assert node.state("kv", "dup").json()["value"] == 1
    assert node.state("kv", "forged").status == 404

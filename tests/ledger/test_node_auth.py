"""Node authentication (docs/ledger-protocol.md "Node authentication"), against a real
node process: strangers are refused on every route, the credential never travels, the
node proves who it is."""

from __future__ import annotations

import json
import time

import pytest

from bsn.ledger import auth
from bsn.ledger.crypto import verify
from tests.ledger.helpers import NODE_KEY, Key, add_user

ALICE = Key("alice")

# Every route of the node, with a request a legitimate caller would make.
ROUTES = [
    ("POST", "/tx", None),
    ("POST", "/tx/batch", None),
    ("GET", "/tx/" + "ab" * 32, None),
    ("GET", "/blocks/1", None),
    ("GET", "/state/kv/greeting", None),
    ("POST", "/query", {"contract": "kv", "function": "get", "args": {"key": "greeting"}}),
    ("GET", "/chain", None),
    ("GET", "/metrics", None),
    ("GET", "/nope", None),
]


@pytest.fixture
def node(make_node):
    node = make_node().start()
    assert node.submit(add_user(ALICE)).status == 200
    assert node.submit(ALICE.tx("kv", "put", {"key": "greeting", "value": "secret"})).status == 200
    return node


def _body(method, path, body):
    if path == "/tx":
        return ALICE.tx("kv", "put", {"key": "x", "value": 1})
    if path == "/tx/batch":
        return {"txs": [ALICE.tx("kv", "put", {"key": "y", "value": 1})]}
    return body


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_a_stranger_is_refused_on_every_route(node, method, path, body):
    body = _body(method, path, body)
    unsigned = node.request(method, path, body, signed=False)
    assert unsigned.status == 401, unsigned.body
    assert unsigned.json()["error"] == "unauthorized" and b"secret" not in unsigned.body
    assert auth.REPLY_HEADER not in unsigned.headers
    # A bearer token, a wrong credential, a replayed or stale signature: all refused too.
    data = None if body is None else json.dumps(body).encode()
    for header in (
        f"Bearer {node.credential}",
        auth.authorization(b"not-the-credential", method, path, data)[0],
        auth.authorization(node.credential.encode(), method, path, data, now=time.time() - 3600)[0],
        auth.authorization(node.credential.encode(), "GET" if method == "POST" else "POST", path, data)[0],
        auth.authorization(node.credential.encode(), method, path + "x", data)[0],
    ):
        reply = node.request(method, path, body, headers={"Authorization": header})
        assert reply.status == 401, (header, reply.body)
    assert node.chain()["height"] == 2  # nothing a stranger sent was ordered


def test_a_signed_body_cannot_be_swapped(node):
    signed_for = json.dumps(ALICE.tx("kv", "put", {"key": "a", "value": 1})).encode()
    other = json.dumps(ALICE.tx("kv", "put", {"key": "a", "value": 2})).encode()
    header, _ = auth.authorization(node.credential.encode(), "POST", "/tx", signed_for)
    reply = node.request("POST", "/tx", raw=other, headers={"Authorization": header})
    assert reply.status == 401
    assert node.request("POST", "/tx", raw=signed_for, headers={"Authorization": header}).status == 200


def test_health_tells_a_stranger_its_status_only(node):
    reply = node.request("GET", "/health", signed=False)
    assert reply.status == 200 and reply.json() == {"status": "ok"}


def test_every_signed_reply_carries_the_nodes_mac(node):
    for method, path, body in ROUTES:
        reply = node.request(method, path, _body(method, path, body))
        assert reply.status != 401
        assert reply.verified, (path, reply.status, reply.headers)


@pytest.mark.parametrize("path", ["/health", "/chain"])
def test_health_and_chain_prove_the_nodes_identity(node, path):
    nonce = auth.new_nonce()
    header, _ = auth.authorization(node.credential.encode(), "GET", path, b"", nonce=nonce)
    reply = node.request("GET", path, headers={"Authorization": header})
    assert reply.status == 200
    identity = reply.json()["identity"]
    public = Key("node", NODE_KEY).public
    assert identity == {
        "app_id": "app-1",
        "node_id": "node-1",
        "public_key": public,
        "challenge": nonce,
        "signature": identity["signature"],
    }
    assert verify(public, identity["signature"], auth.identity_message("app-1", "node-1", nonce))
    assert not verify(public, identity["signature"], auth.identity_message("app-1", "node-2", nonce))
    mac = reply.headers[auth.REPLY_HEADER]
    assert auth.check_reply(node.credential.encode(), nonce, 200, reply.body, mac)


def test_credential_from_a_file_and_a_dev_node_keeps_one_in_its_data_dir(make_node, tmp_path):
    secret = tmp_path / "credential"
    secret.write_text("file-credential-0123456789abcdef\n")
    secret.chmod(0o600)
    node = make_node(tmp_path / "d1", BSN_NODE_API_CREDENTIAL_FILE=str(secret))
    assert "BSN_NODE_API_CREDENTIAL" not in node.env and node.credential == "file-credential-0123456789abcdef"
    node.start()
    assert node.request("GET", "/chain").status == 200

    dev = make_node(tmp_path / "d2")
    dev.env.pop("BSN_NODE_API_CREDENTIAL")
    dev.credential = "unknown"
    dev.start()  # /health answers strangers
    kept = tmp_path / "d2" / auth.CREDENTIAL_FILE
    assert kept.stat().st_mode & 0o777 == 0o600
    assert dev.request("GET", "/chain").status == 401
    dev.credential = kept.read_text().strip()
    assert dev.request("GET", "/chain").status == 200


def test_a_separate_scrape_token_opens_metrics_and_nothing_else(make_node):
    node = make_node(BSN_METRICS_TOKEN="scrape-token-0123456789abcdef").start()
    bearer = {"Authorization": "Bearer scrape-token-0123456789abcdef"}
    reply = node.request("GET", "/metrics", headers=bearer)
    assert reply.status == 200 and b"bsn_block_height" in reply.body
    assert node.request("GET", "/metrics", headers={"Authorization": "Bearer wrong-token-0123456789ab"}).status == 401
    for path in ("/chain", "/blocks/1", "/state/kv/greeting"):
        assert node.request("GET", path, headers=bearer).status == 401

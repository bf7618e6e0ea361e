"""bsn.client: signatures over the protocol's canonical JSON, and the whole path over HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bsn.client import Client, ClientError, generate_key
from tests.conftest import _client_for


def _canonical(obj) -> bytes:
    # Written out from docs/ledger-protocol.md, deliberately not imported from bsn.ledger.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_envelopes_verify_against_the_protocols_canonical_form():
    private, public = generate_key()
    assert len(base64.b64decode(private)) == 32 and len(base64.b64decode(public)) == 32
    client = Client("http://gw", "t", "5b0c5d1e-0000-4000-8000-000000000001", "alice", private)
    before = time.time_ns() // 1_000_000
    envelope = client.sign("kv", "put", {"key": "名字", "value": {"nested": [1, True, None]}})
    after = time.time_ns() // 1_000_000
    assert set(envelope) == {"tx", "sig"}
    tx = envelope["tx"]
    assert set(tx) == {"app", "contract", "function", "args", "signer", "nonce", "timestamp"}
    assert tx["app"] == "5b0c5d1e-0000-4000-8000-000000000001" and tx["signer"] == "alice"
    assert before <= tx["timestamp"] <= after and isinstance(tx["timestamp"], int)
    assert len(tx["nonce"]) == 32 and int(tx["nonce"], 16) >= 0
    Ed25519PublicKey.from_public_bytes(base64.b64decode(public)).verify(
        base64.b64decode(envelope["sig"]), _canonical(tx)
    )  # raises if the signature is not over canonical(tx)
    assert "名字".encode() in _canonical(tx)  # UTF-8, not \\u escapes
    nonces = {client.sign("kv", "get", {"key": "k"})["tx"]["nonce"] for _ in range(100)}
    assert len(nonces) == 100
    assert private not in repr(client)


def test_floats_are_refused_before_signing():
    client = Client("http://gw", "t", "app", "alice", generate_key()[0])
    with pytest.raises(ValueError):
        client.sign("kv", "put", {"key": "k", "value": 1.5})


@pytest.mark.django_db(transaction=True)
def test_client_through_a_live_gateway(live_server, owner, app, sim, alice_key):
    api = _client_for(owner)
    resp = api.post(f"/api/v1/apps/{app.pk}/users", {"name": "alice", "public_key": alice_key[1]}, format="json")
    assert resp.status_code == 201
    token = api._credentials["HTTP_AUTHORIZATION"].split()[1]
    client = Client(live_server.url, token, str(app.pk), "alice", alice_key[0])

    receipt = client.submit("kv", "put", {"key": "greeting", "value": "ni hao"})
    assert receipt["status"] == "committed"
    assert client.tx(receipt["tx_id"])["receipt"] == receipt
    expected_id = hashlib.sha256(_canonical(client.tx(receipt["tx_id"])["tx"]["tx"])).hexdigest()
    assert receipt["tx_id"] == expected_id
    assert client.state("kv", "greeting")["value"] == "ni hao"
    block = client.block(receipt["height"])
    assert block["txs"][0]["tx"]["args"] == {"key": "greeting", "value": "ni hao"}
    assert client.chain()["head_hash"] == block["hash"]

    receipts = client.submit_batch(
        [
            ("kv", "put", {"key": "a", "value": 1}),
            {"contract": "kv", "function": "put", "args": {"key": "b", "value": 2}},
        ]
    )
    assert [r["status"] for r in receipts] == ["committed", "committed"]

    envelope = client.sign("kv", "put", {"key": "c", "value": 3})
    client.submit_envelope(envelope)
    with pytest.raises(ClientError) as excinfo:
        client.submit_envelope(envelope)  # resent: applied once, the second is a replay
    assert excinfo.value.status == 400 and excinfo.value.code == "replayed_nonce"
    assert not excinfo.value.retryable

    with pytest.raises(ClientError) as excinfo:
        client.state("kv", "missing")
    assert excinfo.value.status == 404

    stranger = Client(live_server.url, token, str(app.pk), "mallory", generate_key()[0])
    with pytest.raises(ClientError) as excinfo:
        stranger.submit("kv", "put", {"key": "k", "value": "v"})
    assert excinfo.value.code == "unknown_signer"
    # Close the keep-alive connections now: the live server's request threads hold a
    # database connection each until their client goes, and the test database cannot be
    # dropped while they do (garbage collection would close them at some unknown time).
    client.session.close()
    stranger.session.close()

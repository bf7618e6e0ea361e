"""A warm node (BSN_CLAIM_FILE): stands by, starts with the claim's settings. Without a claim
key it listens on nothing until claimed by file; with one (BSN_CLAIM_KEY_FILE) it takes a
sealed claim on its port and answers anything else with a 4xx.

docs/provisioning.md, "Warm nodes"; the node side is bsn/ledger/__main__.py.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import stat
import time
from pathlib import Path

import pytest

from bsn.ledger.claim import CLAIM_PATH, MAX_CLAIM_BYTES, Claim, ClaimRefused, claim_key, seal, unseal
from tests.ledger.conftest import Node

WAIT = 10.0


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not {what} within {WAIT} s")


def _restarts_claimed(node: Node) -> None:
    """A restart of a claimed node (the engine's restart policy) finds the claim on file at once."""
    assert node.stop() == 0
    node.proc = node.spawn()
    _wait_for(lambda: _listening(node.port), "listening after a restart")
    assert node.request("GET", "/health").json()["app_id"] == "claimed-app"


def _stopped(node: Node) -> None:
    if node.proc and node.proc.poll() is None:
        node.stop()


def _standing_by(tmp_path: Path) -> tuple[Node, Path]:
    claim = tmp_path / "secrets" / "claim.json"
    claim.parent.mkdir()
    node = Node(tmp_path / "data", BSN_CLAIM_FILE=str(claim), BSN_APP_ID="unclaimed")
    node.proc = node.spawn()
    time.sleep(0.5)  # long enough to have listened if it were going to
    assert node.proc.poll() is None
    assert not _listening(node.port), "a node standing by must not listen before it is claimed"
    return node, claim


def test_a_warm_node_listens_only_once_claimed_and_runs_with_the_claim(tmp_path):
    node, claim = _standing_by(tmp_path)
    try:
        # The engine writes the file in pieces: a partial object is not a claim yet.
        claim.write_text('{"BSN_APP_ID": "clai')
        time.sleep(0.1)
        assert not _listening(node.port)
        claim.write_text(json.dumps({"BSN_APP_ID": "claimed-app", "BSN_NODE_ID": "node-7"}))
        _wait_for(lambda: _listening(node.port), "listening after the claim")
        health = node.request("GET", "/health").json()
        assert (health["app_id"], health["node_id"]) == ("claimed-app", "node-7")
        _restarts_claimed(node)
    finally:
        _stopped(node)


def test_a_warm_node_stops_cleanly_while_standing_by(tmp_path):
    node, _ = _standing_by(tmp_path)
    assert node.stop(signal.SIGTERM) == 0
    assert "standing by" in node.stderr


def test_a_claim_that_is_not_bsn_settings_is_refused_with_status_2(tmp_path):
    node, claim = _standing_by(tmp_path)
    claim.write_text(json.dumps({"PATH": "/tmp", "BSN_APP_ID": "x"}))
    _, err = node.proc.communicate(timeout=WAIT)
    assert node.proc.returncode == 2
    assert "JSON object of BSN_* settings" in err.decode()
    assert not _listening(node.port)


# -- claimed over HTTP, on its own port (bsn/ledger/claim.py) ---------------------------


def _post(port: int, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/octet-stream", **(headers or {})})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read() or b"{}")
    finally:
        conn.close()


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _keyed(tmp_path: Path) -> tuple[Node, Path, bytes]:
    """A warm node with a claim key: it listens for its claim once it stands by."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700, parents=True)
    key = os.urandom(32)
    key_file = secrets / "bsn_claim_key"
    key_file.write_text(base64.urlsafe_b64encode(key).decode())
    claim = secrets / "claim.json"
    node = Node(tmp_path / "data", BSN_CLAIM_FILE=str(claim), BSN_CLAIM_KEY_FILE=str(key_file), BSN_APP_ID="unclaimed")
    node.proc = node.spawn()
    _wait_for(lambda: _listening(node.port), "listening for its claim")
    return node, claim, key


def _the_claim(credential: str) -> Claim:
    return Claim(
        settings={
            "BSN_APP_ID": "claimed-app",
            "BSN_NODE_ID": "node-7",
            "BSN_NODE_API_CREDENTIAL_FILE": "",  # replaced below by the file's path
        },
        files={"bsn_node_api_credential": credential},
    )


def test_a_warm_node_with_a_claim_key_is_claimed_on_its_port_and_keeps_serving_there(tmp_path):
    node, claim_file, key = _keyed(tmp_path)
    try:
        claim = _the_claim(node.credential)
        claim.settings["BSN_NODE_API_CREDENTIAL_FILE"] = str(claim_file.parent / "bsn_node_api_credential")
        status, body = _post(node.port, CLAIM_PATH, seal(key, claim))
        assert (status, body) == (200, {"claimed": True})
        # The files the engine would have written: the secret 0400, the claim 0600, last.
        secret = claim_file.parent / "bsn_node_api_credential"
        assert secret.read_text() == node.credential and stat.S_IMODE(secret.stat().st_mode) == 0o400
        assert json.loads(claim_file.read_text())["BSN_APP_ID"] == "claimed-app"
        assert stat.S_IMODE(claim_file.stat().st_mode) == 0o600
        # Same port, the claimed node behind it (its credential came in the claim).
        health = node.request("GET", "/health")
        assert health.verified and (health.json()["app_id"], health.json()["node_id"]) == ("claimed-app", "node-7")
        # The claim again (a replay): the node has no such route any more; nothing changes.
        assert _post(node.port, CLAIM_PATH, seal(key, claim))[0] in (401, 404)
        assert node.request("GET", "/health").json()["node_id"] == "node-7"
        _restarts_claimed(node)
    finally:
        _stopped(node)


def test_a_stranger_on_a_warm_nodes_port_gets_a_clear_4xx_and_changes_nothing(tmp_path):
    node, claim_file, key = _keyed(tmp_path)
    try:
        forged = _the_claim("stranger-credential-0123456789")
        assert _post(node.port, CLAIM_PATH, seal(os.urandom(32), forged)) == (
            403,
            {"error": "claim_refused", "detail": "not sealed with this node's claim key"},
        )
        sealed = bytearray(seal(key, forged))
        sealed[-1] ^= 1  # tampered with
        assert _post(node.port, CLAIM_PATH, bytes(sealed))[0] == 403
        assert _post(node.port, CLAIM_PATH, b"short")[0] == 403
        assert _post(node.port, CLAIM_PATH, b"x" * (MAX_CLAIM_BYTES + 1))[0] == 413
        assert _post(node.port, "/transactions", seal(key, forged))[0] == 404
        assert _get(node.port, "/health") == 404
        assert _get(node.port, CLAIM_PATH) == 405
        # A claim sealed with the key but not BSN_* settings is refused too.
        assert _post(node.port, CLAIM_PATH, seal(key, Claim(settings={"PATH": "/"}, files={})))[0] == 403
        assert _post(node.port, CLAIM_PATH, seal(key, Claim(settings={}, files={"../escape": "x"})))[0] == 403
        # Nothing was written and the node still stands by; the real claim then works.
        assert sorted(p.name for p in claim_file.parent.iterdir()) == ["bsn_claim_key"]
        assert node.proc.poll() is None
        claim = _the_claim(node.credential)
        claim.settings["BSN_NODE_API_CREDENTIAL_FILE"] = str(claim_file.parent / "bsn_node_api_credential")
        assert _post(node.port, CLAIM_PATH, seal(key, claim))[0] == 200
        assert node.request("GET", "/health").json()["node_id"] == "node-7"
    finally:
        _stopped(node)


def test_a_keyed_warm_node_is_still_claimed_by_file_and_stops_cleanly(tmp_path):
    node, claim_file, _ = _keyed(tmp_path)
    try:
        claim_file.write_text(json.dumps({"BSN_APP_ID": "by-file", "BSN_NODE_ID": "node-8"}))
        _wait_for(lambda: _get(node.port, "/health") != 404, "serving after the file claim")
        assert node.request("GET", "/health").json()["app_id"] == "by-file"
    finally:
        node.stop()
    node, _, _ = _keyed(tmp_path / "second")
    assert node.stop(signal.SIGTERM) == 0
    assert "standing by" in node.stderr and "POST /claim" in node.stderr


def test_claims_seal_and_open_only_with_the_same_key():
    key = os.urandom(32)
    claim = Claim(settings={"BSN_APP_ID": "a"}, files={"bsn_x": "secret"})
    assert unseal(key, seal(key, claim)) == claim
    assert seal(key, claim) != seal(key, claim)  # a fresh nonce each time
    with pytest.raises(ClaimRefused):
        unseal(os.urandom(32), seal(key, claim))
    with pytest.raises(ClaimRefused):
        claim_key("not base64!")
    with pytest.raises(ClaimRefused):
        claim_key(base64.urlsafe_b64encode(b"short").decode())


def test_a_claim_written_over_http_is_never_read_half_way_as_one_by_file(tmp_path, monkeypatch):
    """The stand-by loop looks for the claim file every few milliseconds while an HTTP claim
    writes that same file (its secret files, then the claim, each synced): the loop waits for
    the HTTP claim to be settled instead of reading the file as a claim that came by file.
    And once a claim came by file, a claim over HTTP is ``409``: the first claim stands."""
    import threading

    from bsn.ledger import claim as claim_module

    written = threading.Event()
    real_write = claim_module.write_claim

    def slow_write(path: str, claim: Claim) -> None:
        real_write(path, claim)
        written.set()
        time.sleep(0.3)  # a slow disk's fsync: the file is whole, the claim not yet settled

    monkeypatch.setattr(claim_module, "write_claim", slow_write)
    key = os.urandom(32)
    claim_file = tmp_path / "secrets" / "claim.json"

    def read_file() -> dict | None:
        return json.loads(claim_file.read_text()) if claim_file.exists() else None

    server = claim_module.StandByServer(("127.0.0.1", 0), key, str(claim_file))
    try:
        port = server.server_address[1]
        answers: list[int] = []
        poster = threading.Thread(target=lambda: answers.append(_post(port, CLAIM_PATH, seal(key, _the_claim("c")))[0]))
        poster.start()
        assert written.wait(5) and server.settled(read_file) == (_the_claim("c").settings, "over HTTP")
        poster.join(5)
        assert answers == [200]
    finally:
        server.close()

    (tmp_path / "other").mkdir()
    other_file = tmp_path / "other" / "claim.json"
    other_file.write_text(json.dumps({"BSN_APP_ID": "by-file"}))
    server = claim_module.StandByServer(("127.0.0.1", 0), key, str(other_file))
    try:
        assert server.settled(lambda: json.loads(other_file.read_text())) == ({"BSN_APP_ID": "by-file"}, "by file")
        assert server.take(_the_claim("late")) is False  # what an HTTP claim now gets: 409
        assert json.loads(other_file.read_text()) == {"BSN_APP_ID": "by-file"}
    finally:
        server.close()

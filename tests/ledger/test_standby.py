"""A warm node (BSN_CLAIM_FILE): stands by without listening, starts with the claim's settings.

docs/provisioning.md, "Warm nodes"; the node side is bsn/ledger/__main__.py.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

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
        # A restart of a claimed node (the engine's restart policy) finds the claim at once.
        assert node.stop() == 0
        node.proc = node.spawn()
        _wait_for(lambda: _listening(node.port), "listening after a restart")
        assert node.request("GET", "/health").json()["app_id"] == "claimed-app"
    finally:
        if node.proc and node.proc.poll() is None:
            node.stop()


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

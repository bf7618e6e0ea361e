"""Fixtures for the ledger node tests: the node runs as a real subprocess on loopback.

These tests import nothing from Django; the node program is plain Python.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from bsn.ledger import auth
from tests.ledger.helpers import node_env

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, verified: bool = False) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.verified = verified  # the reply carries the node's MAC over our nonce

    def json(self) -> Any:
        return json.loads(self.body)


class Node:
    """A ledger node subprocess plus a tiny HTTP client for it."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BSN_")},
            "BSN_LEDGER_HOST": "127.0.0.1",
            "BSN_LEDGER_PORT": str(self.port),
            "BSN_LEDGER_DATA": str(data_dir),
            "BSN_NODE_ID": "node-1",
            **node_env(),
            **env,
        }
        for name in env:  # a secret given as a file replaces the default given as a value
            if name.endswith("_FILE") and name[:-5] not in env:
                self.env.pop(name[:-5], None)
        if "BSN_NODE_API_CREDENTIAL_FILE" in self.env:
            self.credential = Path(self.env["BSN_NODE_API_CREDENTIAL_FILE"]).read_text().strip()
        else:
            self.credential = self.env.setdefault("BSN_NODE_API_CREDENTIAL", "test-node-credential-0123456789")
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr = ""  # what the last stopped process wrote to stderr

    @property
    def blocks_file(self) -> Path:
        return self.data_dir / "blocks.jsonl"

    def spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "bsn.ledger"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def start(self) -> Node:
        self.proc = self.spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stderr = self.proc.communicate()[1].decode()
                raise AssertionError(f"node exited with {self.proc.returncode}: {self.stderr}")
            try:
                if self.request("GET", "/health", signed=False).status == 200:
                    return self
            except OSError:
                time.sleep(0.02)
        raise AssertionError("node did not answer /health in time")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=timeout)
        self.stderr = err.decode()
        return self.proc.returncode

    def restart(self, sig: int = signal.SIGTERM) -> Node:
        self.stop(sig)
        return self.start()

    def request(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, headers=None, signed: bool = True
    ) -> Reply:
        """One request; ``signed`` (the default) authenticates it with the node's credential
        as the control plane does (bsn/ledger/auth.py)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            headers = dict(headers or {})
            nonce = None
            if signed and "Authorization" not in headers:
                key = self.credential.encode()
                headers["Authorization"], nonce = auth.authorization(key, method, path, data)
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            verified = nonce is not None and auth.check_reply(
                self.credential.encode(), nonce, resp.status, payload, resp.getheader(auth.REPLY_HEADER)
            )
            return Reply(resp.status, dict(resp.getheaders()), payload, verified)
        finally:
            conn.close()

    def submit(self, envelope: Any) -> Reply:
        return self.request("POST", "/tx", envelope)

    def batch(self, envelopes: list[Any]) -> Reply:
        return self.request("POST", "/tx/batch", {"txs": envelopes})

    def state(self, contract: str, key: str) -> Reply:
        return self.request("GET", f"/state/{contract}/" + quote(key, safe=""))

    def query(self, contract: str, function: str, args: dict[str, Any]) -> Reply:
        return self.request("POST", "/query", {"contract": contract, "function": function, "args": args})

    def chain(self) -> dict[str, Any]:
        return self.request("GET", "/chain").json()

    def blocks(self) -> list[dict[str, Any]]:
        height = self.chain()["height"]
        return [self.request("GET", f"/blocks/{h}").json() for h in range(1, height + 1)]


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``make_node(**env)`` returns an unstarted Node on a fresh data dir."""
    nodes: list[Node] = []

    def factory(data_dir: Path | None = None, **env: str) -> Node:
        node = Node(data_dir or tmp_path / "data", **env)
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        if node.proc and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()


@pytest.fixture
def node(make_node: Any) -> Node:
    """A running node on a fresh data dir."""
    return make_node().start()

"""Fixtures for the ordering tests: a local etcd process on loopback, a fake ledger core."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bsn.ledger.etcd_http import EtcdClient, EtcdError, prefix_end, wait_ready

ETCD = shutil.which("etcd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalEtcd:
    """One etcd member as a child process with its own data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.client_port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")
        self.proc = subprocess.Popen(
            [
                ETCD,
                "--name=t",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={self.endpoint}",
                f"--advertise-client-urls={self.endpoint}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=t={peer}",
                "--auto-compaction-mode=revision",
                "--auto-compaction-retention=1000",
                "--max-txn-ops=1024",
                "--logger=zap",
                "--log-level=error",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        wait_ready(EtcdClient([self.endpoint], timeout=1.0), 15)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="session")
def etcd_factory(tmp_path_factory) -> Iterator[Callable[[], LocalEtcd]]:
    if ETCD is None:
        from tests.conftest import require

        require(False, "etcd (apt-get install etcd-server)")
    started: list[LocalEtcd] = []

    def make() -> LocalEtcd:
        server = LocalEtcd(tmp_path_factory.mktemp("etcd") / "data")
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def etcd_server(etcd_factory) -> LocalEtcd:
    """A shared etcd without auth; every test uses its own key prefix."""
    return etcd_factory()


class AuthEtcd:
    """A LocalEtcd with auth on: root, and apps "a" and "b" each confined to its prefix
    (the same role layout as ``ordering_app_credentials``)."""

    def __init__(self, server: LocalEtcd) -> None:
        self.endpoint = server.endpoint
        self.server = server
        anon = EtcdClient([server.endpoint])
        anon.user_add("root", "root-pw")
        anon.role_add("root")
        anon.user_grant_role("root", "root")
        self.creds: dict[str, dict[str, str]] = {}
        for app in ("a", "b"):
            user, prefix = f"app-{app}", f"/bsn/apps/{app}/"
            anon.user_add(user, f"{app}-pw")
            anon.role_add(user)
            anon.role_grant_permission(user, prefix, prefix_end(prefix), "READWRITE")
            anon.user_grant_role(user, user)
            self.creds[app] = {"user": user, "password": f"{app}-pw", "prefix": prefix}
        anon.auth_enable()

    def client(self, app: str) -> EtcdClient:
        return EtcdClient([self.endpoint], user=self.creds[app]["user"], password=self.creds[app]["password"])


class LeasePinner:
    """The attacker: with another app's credential, list every lease in the cluster and
    keep them all alive (three times per TTL) until stopped."""

    def __init__(self, client: EtcdClient) -> None:
        self.client = client
        self.stop = threading.Event()
        self.kept: set[int] = set()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def leases(self) -> list[int]:
        return [int(lease["ID"]) for lease in self.client.call("/v3/lease/leases", {}).get("leases", [])]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                for lease in self.leases():
                    if self.client.lease_keepalive(lease) > 0:
                        self.kept.add(lease)
            except EtcdError:
                pass  # a member down: the client fails over next round
            self.stop.wait(1.0)  # the proposer lease TTL is 3 s

    def __enter__(self) -> LeasePinner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture(scope="session")
def etcd_auth(etcd_factory) -> AuthEtcd:
    """A shared etcd with auth on and two apps' credentials."""
    return AuthEtcd(etcd_factory())


@pytest.fixture
def prefix() -> str:
    return f"/bsn/test/{uuid.uuid4().hex}/"


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class FakeCore:
    """The LedgerCore surface the orderer uses, with a hash chain and strict apply rules."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.blocks: dict[int, dict] = {}
        self.cond = threading.Condition()

    @property
    def height(self) -> int:
        return len(self.blocks)

    @property
    def head_hash(self) -> str:
        return self.blocks[self.height]["hash"] if self.blocks else "0" * 64

    def make_block(self, envelopes: list[dict], timestamp_ms: int, *, parsed: bool = False) -> dict:
        header = {
            "height": self.height + 1,
            "prev_hash": self.head_hash,
            "timestamp": timestamp_ms,
            "proposer": self.node_id,
            "tx_count": len(envelopes),
        }
        return {"header": header, "hash": hashlib.sha256(canonical(header)).hexdigest(), "txs": envelopes}

    def apply_committed(self, block: dict, *, parsed: bool = False) -> list:
        with self.cond:
            height = block["header"]["height"]
            if height <= self.height:
                return []
            if height != self.height + 1 or block["header"]["prev_hash"] != self.head_hash:
                raise ValueError(f"block {height} does not extend {self.height}")
            self.blocks[height] = block
            self.cond.notify_all()
        return [{"tx_id": None} for _ in block["txs"]]

    def block(self, height: int) -> dict | None:
        return self.blocks.get(height)

    def tx_nonces(self) -> list[str]:
        return [env["tx"]["nonce"] for h in sorted(self.blocks) for env in self.blocks[h]["txs"]]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.1))
        return True


def envelope(nonce: str) -> dict:
    tx = {"app": "a", "contract": "kv", "function": "put", "args": {"key": nonce, "value": "v"}}
    return {"tx": {**tx, "signer": "u", "nonce": nonce, "timestamp": 1}, "sig": "x"}


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()

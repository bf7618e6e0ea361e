"""Grow a ledger node's state in a memory-limited container and watch its memory.

Used by tests/runtime/test_ledger_memory.py (96 MiB of state) and, as a script, for the
1 GB figure in docs/benchmarks.md::

    BSN_LEDGER_IMAGE=bsn/ledger:<tag> .venv/bin/python -m tests.runtime.fill_ledger_state 1024

Loops are bounded by the byte count; the node listens on loopback only.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
from contextlib import contextmanager
from typing import Any

from bsn.ledger import auth
from tests.ledger.helpers import ADMIN, Key, add_user

APP = "mem-app"
ALICE = Key("alice", "ulzo9/vKGFhocA8V/q88YWP/sZm/nhxR+SeL8EurkKY=")
LABELS = {"io.bsn.test": "1"}


# The node's API credential by port: a node started without one keeps its own in
# /data/api.credential (docs/ledger-protocol.md, "Node authentication"); requests are signed with it.
_KEYS: dict[int, bytes] = {}


def learn_credential(container, port: int) -> None:
    """Read the credential the node made for itself, to sign what is sent to ``port``."""
    out = container.exec_run(["cat", f"/data/{auth.CREDENTIAL_FILE}"], user="10001")
    assert out.exit_code == 0, out.output
    _KEYS[port] = out.output.strip()


def request(port: int, method: str, path: str, body: Any = None, timeout: float = 120) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {}
        if port in _KEYS:
            headers["Authorization"], _ = auth.authorization(_KEYS[port], method, path, data)
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def wait_healthy(port: int, *, path: str = "/health", timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = request(port, "GET", path, timeout=5)
            if status == 200:
                return body
        except (OSError, http.client.HTTPException, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"node did not answer {path}")
        time.sleep(0.1)


@contextmanager
def node_container(client, image: str, name: str, *, memory: int):
    """A hardened node (as the product runs it) with ``memory`` bytes and no swap; yields (container, port)."""
    volume = client.volumes.create(name=name, labels=LABELS)
    container = None
    try:
        container = client.containers.run(
            image,
            name=name,
            detach=True,
            labels=LABELS,
            environment={"BSN_NODE_ID": "n1", "BSN_APP_ID": APP, "BSN_ADMIN_PUBLIC_KEY": ADMIN.public},
            read_only=True,
            tmpfs={"/tmp": "size=16m"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            user="10001:10001",
            volumes={volume.name: {"bind": "/data", "mode": "rw"}},
            ports={"8080/tcp": ("127.0.0.1", None)},
            mem_limit=memory,
            memswap_limit=memory,
            pids_limit=64,
            nano_cpus=10**9,
        )
        container.reload()
        yield container, int(container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
    finally:
        if container is not None:
            container.remove(force=True)
        volume.remove(force=True)


def container_memory(container) -> dict[str, int]:
    """``stats``: usage minus inactive page cache (what `docker stats` shows); ``anon``: the
    node's own heap and stacks; ``usage``: all the cgroup is charged, page cache included."""
    mem = container.stats(stream=False)["memory_stats"]
    detail = mem.get("stats", {})
    inactive = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    anon = detail.get("anon", detail.get("total_rss", detail.get("rss", 0)))
    return {"usage": mem["usage"], "stats": mem["usage"] - inactive, "anon": anon}


def fill(
    port: int,
    state_bytes: int,
    *,
    value_bytes: int = 200_000,
    per_batch: int = 9,
    report=None,
) -> dict[str, Any]:
    """Put ``state_bytes`` of distinct kv values (batches under the 2 MiB body limit); the chain info."""
    status, body = request(port, "POST", "/tx", add_user(ALICE, app=APP))
    assert status == 200, body
    count = state_bytes // value_bytes
    filler = "v" * (value_bytes - 16)
    done = 0
    while done < count:
        n = min(per_batch, count - done)
        envs = [
            ALICE.tx("kv", "put", {"key": f"k{done + i}", "value": f"{done + i:016d}{filler}"}, app=APP)
            for i in range(n)
        ]
        status, body = request(port, "POST", "/tx/batch", {"txs": envs})
        assert status == 200, body
        assert all(r["status"] == "committed" for r in body["receipts"]), body
        done += n
        if report is not None:
            report(done * value_bytes)
    return request(port, "GET", "/chain")[1]


def measure(client, image: str, mib: int, *, say=print) -> dict[str, Any]:
    """Fill a 64 MiB node with ``mib`` MiB of state, restart it, and report its memory."""
    name = f"bsn-fill-{os.getpid()}-{int(time.time())}"
    peak = {"stats": 0, "anon": 0}
    started = time.monotonic()
    with node_container(client, image, name, memory=64 * 2**20) as (container, port):
        wait_healthy(port)  # a stranger's /health: status only
        learn_credential(container, port)
        idle = container_memory(container)
        last = [0]

        def report(written: int) -> None:
            if written - last[0] >= 64 * 2**20:
                last[0] = written
                m = container_memory(container)
                for k in peak:
                    peak[k] = max(peak[k], m[k])
                say(
                    f"{written / 2**20:7.0f} MiB of state: stats {m['stats'] / 2**20:5.1f} MiB, "
                    f"anon {m['anon'] / 2**20:5.1f} MiB, {time.monotonic() - started:6.0f} s"
                )

        chain = fill(port, mib * 2**20, report=report)
        filled_s = time.monotonic() - started
        container.reload()
        oom = container.attrs["State"]["OOMKilled"]
        busy = container_memory(container)
        container.restart(timeout=10)
        container.reload()
        port = int(container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
        restart_at = time.monotonic()
        wait_healthy(port, timeout=600)
        learn_credential(container, port)
        again = wait_healthy(port, path="/chain", timeout=600)
        restart_s = time.monotonic() - restart_at
        time.sleep(2)
        idle_after = container_memory(container)
        container.reload()
        sizes = container.exec_run(["sh", "-c", "du -sk /data/*"], user="10001").output.decode()
        return {
            "state_mib": mib,
            "height": chain["height"],
            "same_root_after_restart": again["state_root"] == chain["state_root"],
            "oom_killed": oom or container.attrs["State"]["OOMKilled"],
            "restarts": container.attrs["RestartCount"],
            "idle_before": idle,
            "peak_sampled": peak,
            "after_fill": busy,
            "idle_after_restart": idle_after,
            "fill_s": round(filled_s, 1),
            "restart_to_chain_s": round(restart_s, 1),
            "data_kib": dict(reversed(line.split("\t")) for line in sizes.split("\n") if "\t" in line),
        }


def main(argv: list[str]) -> int:
    import docker

    mib = int(argv[0]) if argv else 1024
    image = os.environ.get("BSN_LEDGER_IMAGE", "bsn/ledger:latest")
    client = docker.from_env(timeout=600)
    print(json.dumps(measure(client, image, mib), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

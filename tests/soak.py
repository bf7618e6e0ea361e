"""`make soak`: the embedded stack (`make run`) for a long time, with traffic, beat ticks and
a worker SIGKILL; zero crashes and zero lost operations, or it fails.

Not part of `make test` (it takes SOAK_SECONDS, 1,800 by default). It starts
deploy/scripts/run-embedded.sh exactly as `make run` does (SQLite, the file-system
broker, web + worker + beat under supervisord) in a fresh data directory, on a free
loopback port, with the process driver (no Docker objects to leave behind), then for
SOAK_SECONDS:

- traffic: the demo tenant logs in, lists apps, operations and its tenant, and creates and
  deletes small chain apps (each a provision or delete operation run by the worker);
- beat: the reconciler and the stale-operation sweep tick every few seconds;
- SOAK_KILLS times (default 2) the worker is killed with SIGKILL, right after an app was
  created, so an operation is in flight when it dies.

At the end it waits (bounded) for every operation to finish and counts:
- crashes: processes that exited without being told to (supervisord's log), other than
  the worker SIGKILLs it sent itself, and "Unrecoverable error" lines;
- lost operations: operations that did not succeed;
- 5xx answers and failed connections of the web process.
Each must be zero. Everything talks to 127.0.0.1 only; every loop is bounded in time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
SECONDS = int(os.environ.get("SOAK_SECONDS", "1800"))
KILLS = int(os.environ.get("SOAK_KILLS", "2"))
MAX_LIVE_APPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.base = f"http://127.0.0.1:{port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BSN_", "DATABASE_URL", "CELERY_"))},
            "BSN_DATA_DIR": str(data_dir),
            "PORT": str(port),
            "BSN_EMBEDDED_DRIVER": "process",
            "BSN_RECONCILE_INTERVAL": "5",
            "BSN_OPERATION_STALE_SECONDS": "20",
            "DJANGO_SETTINGS_MODULE": "bsn.settings",
        }
        self.log_path = data_dir.parent / "stack.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["bash", "deploy/scripts/run-embedded.sh"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"make run exited with {self.proc.returncode}: see {self.log_path}")
            try:
                if requests.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        raise SystemExit("the web process did not answer within 300 s")

    def ctl(self, *args: str) -> str:
        env = {**self.env, "BSN_ROOT": str(ROOT)}
        out = subprocess.run(
            [str(ROOT / ".venv/bin/supervisorctl"), "-c", "deploy/supervisor/embedded.conf", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip()

    def kill_worker(self) -> int:
        pid = int(self.ctl("pid", "worker"))
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        pid_file = self.data_dir / "supervisord.pid"
        if self.proc is not None and self.proc.poll() is None:
            if pid_file.exists():
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        # Ledger nodes of the process driver outlive the stack by design: end ours.
        for record in (self.data_dir / "process-nodes").glob("*/*/process.json"):
            pid = json.loads(record.read_text())["pid"]
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if str(self.data_dir).encode() in environ:
                os.kill(pid, signal.SIGTERM)


class Traffic:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        logins = (stack.data_dir / "demo-login.txt").read_text()
        self.token = re.search(r"^API token: (\S+)$", logins, re.M).group(1)
        self.password = re.search(r"^tenant login: demo / (\S+)$", logins, re.M).group(1)
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {self.token}"
        self.answers: Counter = Counter()
        self.live_apps: list[str] = []
        self.created = 0

    def call(self, method: str, path: str, **kwargs):
        try:
            resp = self.http.request(method, self.stack.base + path, timeout=30, **kwargs)
        except requests.RequestException as exc:
            self.answers[f"connection error: {type(exc).__name__}"] += 1
            return None
        self.answers[resp.status_code] += 1
        return resp

    def reads(self) -> None:
        self.call("GET", "/api/v1/apps")
        self.call("GET", "/api/v1/operations")
        self.call("GET", "/api/v1/tenant")
        self.call("GET", "/readyz")
        resp = requests.post(
            self.stack.base + "/api/v1/auth/login", json={"username": "demo", "password": self.password}, timeout=30
        )
        self.answers[resp.status_code] += 1

    def create_app(self) -> None:
        self.created += 1
        body = {"name": f"soak-{self.created}", "regions": ["cn-beijing"], "contract_template": "kv"}
        resp = self.call("POST", "/api/v1/apps", json=body)
        if resp is not None and resp.status_code == 202:
            self.live_apps.append(resp.json()["app"])

    def delete_oldest(self) -> None:
        app = self.live_apps.pop(0)
        self.call("DELETE", f"/api/v1/apps/{app}")


def _operations(data_dir: Path) -> Counter:
    with sqlite3.connect(f"file:{data_dir / 'bsn.sqlite3'}?mode=ro", uri=True, timeout=30) as db:
        return Counter(dict(db.execute("SELECT status, count(*) FROM chainapps_operation GROUP BY status").fetchall()))


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bsn-soak-"))
    stack = Stack(work / "data", _free_port())
    print(f"soak: {SECONDS} s, {KILLS} worker SIGKILL(s), data in {work}", flush=True)
    stack.start()
    traffic = Traffic(stack)
    kills: list[int] = []
    kill_at = [SECONDS * (i + 1) / (KILLS + 1) for i in range(KILLS)]
    started = time.monotonic()
    last_app = 0.0
    try:
        while (elapsed := time.monotonic() - started) < SECONDS:
            traffic.reads()
            if elapsed - last_app >= 15:
                last_app = elapsed
                if len(traffic.live_apps) >= MAX_LIVE_APPS:
                    traffic.delete_oldest()
                traffic.create_app()
                if kill_at and elapsed >= kill_at[0]:
                    kill_at.pop(0)
                    kills.append(stack.kill_worker())
                    print(f"soak: {elapsed:.0f} s: worker {kills[-1]} killed (SIGKILL)", flush=True)
            time.sleep(1)
        while traffic.live_apps:
            traffic.delete_oldest()
        # Every operation must finish: bounded wait (stale ones are resumed every 5 s).
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ops = _operations(stack.data_dir)
            if not ops["pending"] and not ops["running"]:
                break
            time.sleep(2)
        status = stack.ctl("status")
    finally:
        stack.stop()

    ops = _operations(stack.data_dir)
    supervisor_log = (stack.data_dir / "supervisord.log").read_text()
    output = stack.log_path.read_text(errors="replace")
    unexpected = re.findall(r"exited: (\w+) \((.*?); not expected\)", supervisor_log)
    ours = [(name, why) for name, why in unexpected if name == "worker" and "SIGKILL" in why]
    crashes = len(unexpected) - min(len(ours), len(kills)) + output.count("Unrecoverable error")
    lost = sum(n for s, n in ops.items() if s != "succeeded")
    errors = {k: v for k, v in traffic.answers.items() if not isinstance(k, int) or k >= 500}
    ticks = output.count("Scheduler: Sending due task")
    print(f"soak: ran {SECONDS} s; answers {dict(traffic.answers)}")
    print(f"soak: beat ticks sent {ticks}; worker SIGKILLs {len(kills)}; exits {len(unexpected)}")
    print(f"soak: operations {dict(ops)}; apps created {traffic.created}")
    print(f"soak: processes at the end:\n{status}")
    print(f"soak: crashes {crashes}, lost operations {lost}, 5xx/connection errors {sum(errors.values())}")
    ok = (
        crashes == 0
        and lost == 0
        and not errors
        and ticks > 0
        and len(ours) >= len(kills)
        and status.count("RUNNING") == 3
    )
    print("soak: PASSED" if ok else f"soak: FAILED (logs in {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

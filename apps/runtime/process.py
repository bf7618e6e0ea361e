"""Process driver: runs the same ledger node program as a local process (no Docker).

Layout per node under ``root_dir/<spec.name>/`` (the name is the same deterministic
name a container would get):

- ``labels.json``      the node's labels — its presence means "the node exists"
                       (like a container); ``list_nodes`` scans for it
- ``data/``            the node's data (like the volume); ``data-labels.json`` owns it
- ``port``             loopback port picked once, reused on restart while free
- ``pid``, ``process.json``  pid plus its start marker, node id and generation, so a
                       recycled pid is never mistaken for our node
- ``node.log``         stdout/stderr of the node
- ``secrets/``         the node's secrets, one file each (0700 / 0600: the worker's user,
                       which the node runs as, only); the node gets ``<NAME>_FILE``

It gives no isolation and enforces no memory/CPU limits: it exists so the product works
where no Docker engine does (development, demos, CI without Docker).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from apps.runtime.base import PermanentRuntimeError, TransientRuntimeError
from apps.runtime.docker import format_endpoint, owned_by, volume_labels
from apps.runtime.spec import (
    LABEL_APP,
    LABEL_GENERATION,
    LABEL_INSTALLATION,
    LABEL_NODE,
    NodeSpec,
    NodeStatus,
    secret_env,
    secret_file_name,
)

# The directory that contains the ``bsn`` package: ``python -m bsn.ledger`` runs from here.
REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
PORT_REUSE_WAIT = 1.0  # seconds to wait for the node's previous port to be released
LOG_ROTATE_BYTES = 10 * 1024 * 1024
MODULE = "bsn.ledger"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like the node's own server: TIME_WAIT leftovers do not make a port busy,
        # a live listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def process_start_marker(pid: int) -> str | None:
    """Something that changes when a pid is reused: the kernel start time of the process.

    None if the process does not exist or is a zombie.
    """
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.joinpath("self").exists():
        try:
            raw = stat.read_text()
        except OSError:
            return None
        # Field 2 (comm) may contain spaces/parens: split after the last ')'.
        fields = raw[raw.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            # A zombie leader may still have threads exiting (and holding the port and
            # the data lock): dead only once the leader is the last task left.
            with contextlib.suppress(OSError):
                if len(os.listdir(f"/proc/{pid}/task")) > 1:
                    return fields[19]
            return None
        return fields[19]  # field 22: starttime in clock ticks since boot
    # No /proc (macOS, BSD): ask ps for the start time instead.
    out = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True, check=False)
    line = out.stdout.strip()
    if out.returncode != 0 or not line or line.startswith("Z"):
        return None
    return line.split(None, 1)[1]


def _process_cmdline(pid: int) -> str:
    proc = Path(f"/proc/{pid}/cmdline")
    if proc.exists():
        with contextlib.suppress(OSError):
            return proc.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        return ""
    out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return out.stdout


class ProcessDriver:
    """Executes node specs as detached local processes under ``root_dir``."""

    # None of the capabilities beyond RuntimeDriver: nodes share loopback (no networks),
    # platform services need Docker, ports are chosen by the OS, and there are no events
    # (the periodic reconcile pass heals processes).
    CAPABILITIES = ()
    name = "process"

    def __init__(self, root_dir: Path, python: str = sys.executable) -> None:
        self.root_dir = Path(root_dir)
        self.python = python
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def __repr__(self) -> str:
        return f"ProcessDriver({str(self.root_dir)!r})"

    # -- plumbing

    def _dir(self, spec_or_name: NodeSpec | str) -> Path:
        name = spec_or_name if isinstance(spec_or_name, str) else spec_or_name.name
        if not name or "/" in name or name.startswith("."):
            raise PermanentRuntimeError(f"invalid node name {name!r}")
        return self.root_dir / name

    @contextlib.contextmanager
    def _locked(self, node_dir: Path) -> Iterator[None]:
        """Serialise ensure/stop/remove of one node across workers (file lock)."""
        self.root_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.root_dir / f".{node_dir.name}.lock"
        with open(lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _reap(self, pid: int) -> None:
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            self._children.pop(pid, None)

    def _live_process(self, node_dir: Path) -> dict[str, Any] | None:
        """The recorded process if it is still the very process we started, else None."""
        record = _read_json(node_dir / "process.json")
        if not record:
            return None
        pid = int(record["pid"])
        self._reap(pid)
        marker = process_start_marker(pid)
        if marker is None or marker != record.get("start_marker"):
            return None  # gone, zombie, or the pid was recycled by another process
        cmdline = _process_cmdline(pid)
        if cmdline and MODULE not in cmdline:  # empty while a thread group is exiting
            return None
        return record

    def _status(self, spec: NodeSpec, node_dir: Path) -> NodeStatus:
        labels = _read_json(node_dir / "labels.json")
        if labels is None:
            return NodeStatus(name=spec.name, state="missing")
        record = self._live_process(node_dir)
        if record is None:
            return NodeStatus(name=spec.name, state="stopped", labels=labels)
        return NodeStatus(
            name=spec.name,
            state="running",
            runtime_id=str(record["pid"]),
            endpoint=format_endpoint(LOOPBACK, record["port"]),
            labels=labels,
        )

    def _check_owner(self, spec: NodeSpec, node_dir: Path) -> None:
        installation = spec.labels[LABEL_INSTALLATION]
        labels = _read_json(node_dir / "labels.json")
        if labels is not None:
            if not owned_by(labels, installation):
                raise PermanentRuntimeError(
                    f"{node_dir} belongs to another installation; refusing to adopt or touch it"
                )
            if labels.get(LABEL_NODE) != spec.labels[LABEL_NODE]:
                raise TransientRuntimeError(
                    f"{node_dir} belongs to node {labels.get(LABEL_NODE)} of this installation; "
                    "waiting for orphan cleanup"
                )
        data_labels = _read_json(node_dir / "data-labels.json")
        if data_labels is not None and (
            not owned_by(data_labels, installation) or data_labels.get(LABEL_APP) != spec.labels[LABEL_APP]
        ):
            raise PermanentRuntimeError(f"{node_dir}/data belongs to someone else; refusing to adopt it")
        if node_dir.exists() and labels is None and data_labels is None and any(node_dir.iterdir()):
            raise PermanentRuntimeError(f"{node_dir} exists without our labels; refusing to adopt it")

    def _pick_port(self, node_dir: Path) -> int:
        port_file = node_dir / "port"
        with contextlib.suppress(FileNotFoundError, ValueError):
            port = int(port_file.read_text().strip())
            # Right after a crash the kernel may hold the port for a moment (orphaned
            # connections in FIN-WAIT); a stable endpoint is worth a short wait.
            deadline = time.monotonic() + PORT_REUSE_WAIT
            while True:
                if _port_free(port):
                    return port
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        port = _free_port()
        _write_atomic(port_file, f"{port}\n")
        return port

    @staticmethod
    def _write_secrets(spec: NodeSpec, node_dir: Path) -> Path:
        """One file per secret, readable by this user only (never in the environment,
        which /proc/<pid>/environ shows). Written before every start."""
        folder = node_dir / "secrets"
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)
        for name, value in spec.secrets.items():
            path = folder / secret_file_name(name)
            tmp = folder / f".{path.name}.tmp"
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(value)
            os.replace(tmp, path)
        return folder

    def _env(self, spec: NodeSpec, node_dir: Path, port: int) -> dict[str, str]:
        # Built from scratch: the control plane's own environment (database URL, secret
        # key, tokens) must never leak into a tenant's node.
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **spec.env,
            **secret_env(spec, str(self._write_secrets(spec, node_dir))),
            "BSN_LEDGER_HOST": LOOPBACK,
            "BSN_LEDGER_PORT": str(port),
            "BSN_LEDGER_DATA": str(node_dir / "data"),
        }

    def _start(self, spec: NodeSpec, node_dir: Path) -> None:
        port = self._pick_port(node_dir)
        log_path = node_dir / "node.log"
        if log_path.exists() and log_path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log_path, node_dir / "node.log.1")
        # spec.command is the container's command; here it is always the same program.
        argv = [self.python, "-m", MODULE]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=self._env(spec, node_dir, port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the worker; killable as a group
                close_fds=True,
            )
        self._children[proc.pid] = proc
        marker = process_start_marker(proc.pid)
        if marker is None or proc.poll() is not None:
            raise TransientRuntimeError(f"node {spec.name} exited at once; see {log_path}:\n{self._log_tail(log_path)}")
        record = {
            "pid": proc.pid,
            "start_marker": marker,
            "node_id": spec.labels[LABEL_NODE],
            "generation": spec.labels[LABEL_GENERATION],
            "port": port,
            "started_at": time.time(),
        }
        _write_atomic(node_dir / "process.json", json.dumps(record))
        _write_atomic(node_dir / "pid", f"{proc.pid}\n")

    @staticmethod
    def _log_tail(path: Path, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _terminate(self, node_dir: Path) -> None:
        record = self._live_process(node_dir)
        if record is not None:
            pid = int(record["pid"])
            self._signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + TERM_GRACE
            while time.monotonic() < deadline and self._live_process(node_dir) is not None:
                time.sleep(0.05)
            if self._live_process(node_dir) is not None:
                self._signal(pid, signal.SIGKILL)
                deadline = time.monotonic() + TERM_GRACE
                while time.monotonic() < deadline and self._live_process(node_dir) is not None:
                    time.sleep(0.05)
                if self._live_process(node_dir) is not None:
                    raise TransientRuntimeError(f"node process {pid} survived SIGKILL; look again")
        for leftover in ("process.json", "pid"):
            (node_dir / leftover).unlink(missing_ok=True)

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        # The node leads its own session/process group: signal the group so helpers die too.
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    # -- protocol

    def ping(self) -> None:
        try:
            self.root_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermanentRuntimeError(f"process driver root {self.root_dir} is unusable: {exc}") from exc
        if not (REPO_ROOT / "bsn" / "ledger").is_dir():
            raise PermanentRuntimeError(f"ledger program not found under {REPO_ROOT}/bsn/ledger")

    def ensure_node(self, spec: NodeSpec) -> NodeStatus:
        node_dir = self._dir(spec)
        with self._locked(node_dir):
            self._check_owner(spec, node_dir)
            # Labels first: a crash half-way leaves a directory we still recognise as ours.
            node_dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(node_dir / "data-labels.json", json.dumps(self._data_labels(spec), sort_keys=True))
            _write_atomic(node_dir / "labels.json", json.dumps(spec.labels, sort_keys=True))
            (node_dir / "data").mkdir(exist_ok=True)
            record = self._live_process(node_dir)
            if record is not None and str(record.get("generation")) != spec.labels[LABEL_GENERATION]:
                self._terminate(node_dir)  # new generation: restart with the new spec
                record = None
            if record is None:
                self._start(spec, node_dir)
            status = self._status(spec, node_dir)
            if status.state != "running":
                log_path = node_dir / "node.log"
                raise TransientRuntimeError(
                    f"node {spec.name} exited right after start; see {log_path}:\n{self._log_tail(log_path)}"
                )
            return status

    def stop_node(self, spec: NodeSpec) -> NodeStatus:
        node_dir = self._dir(spec)
        if not (node_dir / "labels.json").exists():
            return NodeStatus(name=spec.name, state="missing")
        with self._locked(node_dir):
            self._check_owner(spec, node_dir)
            self._terminate(node_dir)
            return self._status(spec, node_dir)

    def remove_node(self, spec: NodeSpec, *, keep_data: bool) -> None:
        node_dir = self._dir(spec)
        if not node_dir.exists():
            return
        with self._locked(node_dir):
            self._check_owner(spec, node_dir)
            self._terminate(node_dir)
            keep = {"data", "data-labels.json"} if keep_data else set()
            for entry in node_dir.iterdir():
                if entry.name in keep:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink(missing_ok=True)
            if not keep_data:
                with contextlib.suppress(OSError):
                    node_dir.rmdir()
        if not keep_data:
            (self.root_dir / f".{node_dir.name}.lock").unlink(missing_ok=True)

    def remove_network(self, spec: NodeSpec) -> None:
        """Processes share the loopback interface: there is no network to remove."""

    def observe(self, spec: NodeSpec) -> NodeStatus:
        node_dir = self._dir(spec)
        labels = _read_json(node_dir / "labels.json")
        if labels is None or not owned_by(labels, spec.labels[LABEL_INSTALLATION]):
            return NodeStatus(name=spec.name, state="missing")
        return self._status(spec, node_dir)

    def list_nodes(self, *, installation_id: str) -> list[NodeStatus]:
        if not self.root_dir.is_dir():
            return []
        result = []
        for node_dir in sorted(self.root_dir.iterdir()):
            labels = _read_json(node_dir / "labels.json") if node_dir.is_dir() else None
            if labels is None or not owned_by(labels, installation_id):
                continue
            record = self._live_process(node_dir)
            result.append(
                NodeStatus(
                    name=node_dir.name,
                    state="running" if record else "stopped",
                    runtime_id=str(record["pid"]) if record else None,
                    endpoint=format_endpoint(LOOPBACK, record["port"]) if record else None,
                    labels=labels,
                )
            )
        return result

    @staticmethod
    def _data_labels(spec: NodeSpec) -> dict[str, str]:
        return volume_labels(spec)

"""ProcessDriver running the real ledger program (``python -m bsn.ledger``) locally."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from apps.runtime.base import PermanentRuntimeError
from apps.runtime.health import wait_healthy
from apps.runtime.process import process_start_marker
from apps.runtime.spec import LABEL_INSTALLATION
from tests.runtime.conftest import auth_of

HEALTH_TIMEOUT = 30.0


def pid_of(status) -> int:
    return int(status.runtime_id)


def alive(pid: int) -> bool:
    return process_start_marker(pid) is not None


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def test_ensure_starts_a_healthy_loopback_node_and_is_idempotent(process_driver, make_spec):
    spec = make_spec()
    status = process_driver.ensure_node(spec)
    assert status.state == "running"
    assert status.endpoint.startswith("http://127.0.0.1:")
    wait_healthy(status.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))

    node_dir = process_driver.root_dir / spec.name
    assert json.loads((node_dir / "labels.json").read_text()) == spec.labels
    assert int((node_dir / "pid").read_text()) == pid_of(status)
    assert int((node_dir / "port").read_text()) == int(status.endpoint.rsplit(":", 1)[1])
    assert (node_dir / "data").is_dir() and (node_dir / "node.log").is_file()

    again = process_driver.ensure_node(spec)
    assert again.runtime_id == status.runtime_id and again.endpoint == status.endpoint


def test_node_environment_is_built_from_scratch(process_driver, make_spec, monkeypatch):
    monkeypatch.setenv("BSN_SECRET_KEY", "must-not-leak")
    spec = make_spec(env={"BSN_CONTRACT": "kv"})
    status = process_driver.ensure_node(spec)
    # Read the environment of the node once it answers: a node that died at once (a zombie)
    # shows an empty environ, which would read as a missing variable instead of the real cause.
    wait_healthy(status.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    environ_file = Path(f"/proc/{pid_of(status)}/environ")
    if not environ_file.exists():
        pytest.skip("no /proc")
    env = dict(item.split("=", 1) for item in environ_file.read_bytes().decode().split("\0") if "=" in item)
    assert "BSN_SECRET_KEY" not in env
    # Secrets are files only the node's user can read, never environment variables.
    for name, value in spec.secrets.items():
        assert name not in env
        assert not any(value in v for v in env.values())
        path = Path(env[f"{name}_FILE"])
        assert path.read_text() == value and path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
    assert env["BSN_LEDGER_HOST"] == "127.0.0.1"
    assert env["BSN_LEDGER_DATA"] == str(process_driver.root_dir / spec.name / "data")
    assert env["BSN_NODE_ID"] == spec.env["BSN_NODE_ID"]
    assert env["BSN_CONTRACT"] == "kv"


def test_a_recycled_pid_is_never_adopted_or_signalled(process_driver, make_spec):
    spec = make_spec()
    first = process_driver.ensure_node(spec)
    process_driver.stop_node(spec)
    node_dir = process_driver.root_dir / spec.name
    # Pretend the recorded pid now belongs to another process: this test process.
    me = os.getpid()
    fake = {"pid": me, "start_marker": process_start_marker(me), "generation": "1", "port": 1}
    (node_dir / "process.json").write_text(json.dumps(fake))
    assert process_driver.observe(spec).state == "stopped"  # cmdline is not bsn.ledger
    fake["start_marker"] = "0"
    (node_dir / "process.json").write_text(json.dumps(fake))
    assert process_driver.observe(spec).state == "stopped"  # start time differs

    again = process_driver.ensure_node(spec)  # starts a new node, does not touch us
    assert again.state == "running" and pid_of(again) not in (me, pid_of(first))
    process_driver.stop_node(spec)


def test_foreign_node_dir_is_refused(process_driver, make_spec):
    spec = make_spec()
    node_dir = process_driver.root_dir / spec.name
    node_dir.mkdir(parents=True)
    foreign = {**spec.labels, LABEL_INSTALLATION: "someone-else"}
    (node_dir / "labels.json").write_text(json.dumps(foreign))
    with pytest.raises(PermanentRuntimeError):
        process_driver.ensure_node(spec)
    with pytest.raises(PermanentRuntimeError):
        process_driver.remove_node(spec, keep_data=False)
    assert process_driver.observe(spec).state == "missing"
    assert json.loads((node_dir / "labels.json").read_text()) == foreign

    spec2 = make_spec()
    stray = process_driver.root_dir / spec2.name
    stray.mkdir()
    (stray / "something").write_text("not ours")
    with pytest.raises(PermanentRuntimeError):
        process_driver.ensure_node(spec2)

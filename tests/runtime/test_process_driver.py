"""ProcessDriver running the real ledger program (``python -m bsn.ledger``) locally."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from apps.runtime.base import PermanentRuntimeError
from apps.runtime.health import probe, wait_healthy
from apps.runtime.process import process_start_marker
from apps.runtime.spec import LABEL_GENERATION, LABEL_INSTALLATION
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


def test_dead_node_is_restarted_on_the_same_port(process_driver, make_spec):
    spec = make_spec()
    first = process_driver.ensure_node(spec)
    wait_healthy(first.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    os.kill(pid_of(first), signal.SIGKILL)
    wait_for(lambda: process_driver.observe(spec).state == "stopped")

    again = process_driver.ensure_node(spec)
    assert again.state == "running" and again.runtime_id != first.runtime_id
    assert again.endpoint == first.endpoint  # the port is reused while free
    wait_healthy(again.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))


def test_stop_then_start_keeps_data_and_new_generation_restarts(process_driver, make_spec):
    spec = make_spec()
    first = process_driver.ensure_node(spec)
    wait_healthy(first.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    marker = process_driver.root_dir / spec.name / "data" / "marker"
    marker.write_text("kept")

    stopped = process_driver.stop_node(spec)
    assert stopped.state == "stopped" and stopped.endpoint is None
    assert not alive(pid_of(first))
    assert not probe(first.endpoint, spec.health_path, auth=auth_of(spec))
    assert process_driver.stop_node(spec).state == "stopped"  # idempotent

    restarted = process_driver.ensure_node(spec)
    wait_healthy(restarted.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    assert marker.read_text() == "kept"

    upgraded = process_driver.ensure_node(replace(spec, labels={**spec.labels, LABEL_GENERATION: "2"}))
    assert upgraded.runtime_id != restarted.runtime_id
    assert not alive(pid_of(restarted))
    wait_healthy(upgraded.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    assert marker.read_text() == "kept"


def test_remove_node_keeps_or_drops_data(process_driver, make_spec, installation_id):
    spec = make_spec()
    status = process_driver.ensure_node(spec)
    node_dir = process_driver.root_dir / spec.name
    (node_dir / "data" / "marker").write_text("kept")

    process_driver.remove_node(spec, keep_data=True)
    assert not alive(pid_of(status))
    assert process_driver.observe(spec).state == "missing"
    assert process_driver.list_nodes(installation_id=installation_id) == []
    assert (node_dir / "data" / "marker").read_text() == "kept"

    again = process_driver.ensure_node(spec)  # adopts the kept data
    wait_healthy(again.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    assert (node_dir / "data" / "marker").read_text() == "kept"

    process_driver.remove_node(spec, keep_data=False)
    assert not alive(pid_of(again))
    assert not node_dir.exists()
    process_driver.remove_node(spec, keep_data=False)  # idempotent
    process_driver.remove_network(spec)  # no-op
    assert process_driver.stop_node(spec).state == "missing"


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

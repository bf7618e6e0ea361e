"""What every runtime driver must do (apps/runtime/base.py), run against each of them.

A driver implements RuntimeDriver and exactly the capabilities it declares in
CAPABILITIES. Behaviour every driver shares is tested here once, parametrised over the
drivers (Docker, process and Swarm; add the next one to ``DRIVERS``); what only one driver
has (networks, hardening, pids, Swarm's own restarts) stays in its own test file."""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import replace
from types import SimpleNamespace

import pytest

from apps.runtime.base import CAPABILITIES, NodeEvents, RuntimeDriver, supports
from apps.runtime.health import probe, wait_healthy
from apps.runtime.spec import LABEL_GENERATION
from tests.runtime.conftest import auth_of

DRIVERS = ["process_driver", "docker_driver", "swarm_driver"]
HEALTH_TIMEOUT = 60.0


@pytest.fixture(params=DRIVERS)
def driver(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def reach(driver, request):
    """How a test reaches into a node's data and process, per driver: the only
    driver-specific part of the shared behaviour tests below."""
    if driver.name == "docker":
        from tests.runtime.test_docker_driver import get_file, put_file

        client = request.getfixturevalue("docker_client")
        return SimpleNamespace(
            write=lambda spec: put_file(client.containers.get(spec.name), "/data", "marker", b"kept"),
            read=lambda spec: get_file(client.containers.get(spec.name), "/data/marker").decode(),
            data_gone=lambda spec: not [v for v in client.volumes.list() if v.name == spec.volume],
            kill=lambda spec, status: client.containers.get(spec.name).kill(),
        )
    if driver.name == "swarm":
        from tests.runtime.test_docker_driver import get_file, put_file
        from tests.runtime.test_swarm_driver import task_container

        client = request.getfixturevalue("swarm_client")
        return SimpleNamespace(
            write=lambda spec: put_file(task_container(client, spec), "/data", "marker", b"kept"),
            read=lambda spec: get_file(task_container(client, spec), "/data/marker").decode(),
            data_gone=lambda spec: not [v for v in client.volumes.list() if v.name == spec.volume],
            kill=lambda spec, status: task_container(client, spec).kill(),
        )
    folder = lambda spec: driver.root_dir / spec.name  # noqa: E731
    return SimpleNamespace(
        write=lambda spec: (folder(spec) / "data" / "marker").write_text("kept"),
        read=lambda spec: (folder(spec) / "data" / "marker").read_text(),
        data_gone=lambda spec: not folder(spec).exists(),
        kill=lambda spec, status: os.kill(int(status.runtime_id.split(":")[0]), signal.SIGKILL),
    )


def _wait(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_driver_implements_the_contract_and_exactly_what_it_declares(driver):
    for name in RuntimeDriver.__dict__:
        if not name.startswith("_") and callable(getattr(RuntimeDriver, name)):
            assert callable(getattr(driver, name, None)), f"{driver.name} lacks {name}"
    for capability in CAPABILITIES:
        assert supports(driver, capability) == isinstance(driver, capability), (driver.name, capability.__name__)
    assert supports(driver, NodeEvents) == (driver.name == "docker")


def test_lifecycle_is_idempotent_and_missing_is_never_an_error(driver, make_spec):
    spec = make_spec()
    status = driver.ensure_node(spec)
    wait_healthy(status.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    again = driver.ensure_node(spec)  # adopts, creates nothing twice
    assert (again.name, again.state, again.endpoint) == (spec.name, "running", status.endpoint)
    assert driver.observe(spec).state == "running"

    assert driver.stop_node(spec).state == "stopped"
    assert driver.stop_node(spec).state == "stopped"  # twice is fine
    assert driver.observe(spec).state == "stopped"
    restarted = driver.ensure_node(spec)
    wait_healthy(restarted.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))

    driver.remove_node(spec, keep_data=False)
    assert driver.observe(spec).state == "missing"
    driver.remove_node(spec, keep_data=False)  # missing is fine
    driver.remove_network(spec)
    driver.remove_network(spec)
    assert driver.stop_node(spec).state == "missing"


def test_list_nodes_sees_only_this_installation(driver, make_spec, installation_id):
    a, b = make_spec(), make_spec()
    other = make_spec(installation_id=uuid.uuid4().hex)
    started = driver.ensure_node(a)
    driver.ensure_node(b)
    driver.stop_node(b)
    try:
        driver.ensure_node(other)
        listed = {s.name: s for s in driver.list_nodes(installation_id=installation_id)}
        assert set(listed) == {a.name, b.name}
        # What one listing shows of a node is what observing that node shows.
        for spec in (a, b):
            seen = driver.observe(spec)
            assert (listed[spec.name].state, listed[spec.name].endpoint) == (seen.state, seen.endpoint)
            assert listed[spec.name].runtime_id == seen.runtime_id
            assert listed[spec.name].labels == seen.labels
        assert listed[a.name].state == "running" and listed[a.name].endpoint == started.endpoint
        assert listed[b.name].state == "stopped" and listed[b.name].endpoint is None
    finally:
        driver.remove_node(other, keep_data=False)
        driver.remove_network(other)


def test_a_killed_node_is_started_again_by_ensure(driver, make_spec, reach):
    spec = make_spec()
    first = driver.ensure_node(spec)
    wait_healthy(first.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    reach.kill(spec, first)
    # Stopped -- or already running again in a new container where the runtime restarts a
    # dead node by itself (Swarm: tests/runtime/test_swarm_driver.py); never the old one.
    _wait(
        lambda: (
            (seen := driver.observe(spec)).state == "stopped"
            or (seen.state == "running" and seen.runtime_id != first.runtime_id)
        )
    )
    again = driver.ensure_node(spec)
    assert again.state == "running"
    wait_healthy(again.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))


def test_stop_and_start_keep_the_data_and_a_new_generation_replaces_the_node(driver, make_spec, reach):
    spec = make_spec()
    first = driver.ensure_node(spec)
    wait_healthy(first.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    reach.write(spec)
    stopped = driver.stop_node(spec)
    assert stopped.state == "stopped" and stopped.endpoint is None
    assert not probe(first.endpoint, spec.health_path, auth=auth_of(spec))
    restarted = driver.ensure_node(spec)
    wait_healthy(restarted.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    assert reach.read(spec) == "kept"

    upgraded = driver.ensure_node(replace(spec, labels={**spec.labels, LABEL_GENERATION: "2"}))
    assert upgraded.runtime_id != restarted.runtime_id and upgraded.labels[LABEL_GENERATION] == "2"
    wait_healthy(upgraded.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    assert reach.read(spec) == "kept"


def test_remove_node_keeps_or_drops_the_data(driver, make_spec, reach, installation_id):
    spec = make_spec()
    driver.ensure_node(spec)
    reach.write(spec)
    driver.remove_node(spec, keep_data=True)
    assert driver.observe(spec).state == "missing"
    assert driver.list_nodes(installation_id=installation_id) == []
    assert not reach.data_gone(spec)
    driver.remove_node(spec, keep_data=True)  # twice is fine

    again = driver.ensure_node(spec)  # adopts the kept data
    wait_healthy(again.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    assert reach.read(spec) == "kept"

    driver.remove_node(spec, keep_data=False)
    assert driver.observe(spec).state == "missing" and reach.data_gone(spec)
    driver.remove_node(spec, keep_data=False)


def test_a_warm_node_is_claimed_in_place_where_the_driver_declares_it(driver, make_spec, installation_id, ledger_image):
    """``WarmNodes`` (apps/runtime/base.py; docs/provisioning.md, "Warm nodes"): a warm node
    that ``ensure_node`` makes becomes ready for its claim, and ``ensure_node`` of a node's
    spec naming it claims it in place: the same container, serving as that node. A driver
    that does not declare it keeps none: neither the worker nor the region form offers them."""
    import base64

    from django.core.exceptions import ValidationError

    from apps.chainapps.warm import warm_capable
    from apps.regions.models import Region
    from apps.runtime.base import WarmNodes
    from apps.runtime.spec import build_warm_spec
    from tests.runtime.conftest import LEDGER_PORT

    if not supports(driver, WarmNodes):
        assert not warm_capable(SimpleNamespace(driver=driver.name))
        with pytest.raises(ValidationError, match="warm nodes are kept on Docker regions only"):
            Region(code="cn-warm", name="warm", driver=driver.name, warm_nodes=1).clean()
        return
    warm_id = str(uuid.uuid4())
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    warm = build_warm_spec(
        installation_id=installation_id,
        warm_id=warm_id,
        region_code="cn-test",
        image=ledger_image,
        command=None,
        port=LEDGER_PORT,
        health_path="/health",
        publish_host="127.0.0.1",
        mem_limit_mb=128,
        cpus=0.5,
        pids_limit=64,
        host_port=None,
        claim_key=key,
    )
    node = make_spec(name=warm.name, warm=warm_id, claim_key=key)
    try:
        made = driver.ensure_node(warm)
        _wait(lambda: driver.warm_ready(made))
        claimed = driver.ensure_node(node)
        assert claimed.runtime_id == made.runtime_id  # claimed in place, nothing made anew
        wait_healthy(claimed.endpoint, node.health_path, HEALTH_TIMEOUT, auth=auth_of(node))
        assert not driver.warm_ready(claimed)  # a node now, no longer waiting for a claim
    finally:
        driver.remove_node(node, keep_data=False)
        driver.remove_network(node)

"""What every runtime driver must do (apps/runtime/base.py), run against each of them.

A driver implements RuntimeDriver and exactly the capabilities it declares in
CAPABILITIES. Behaviour every driver shares is tested here once, parametrised over the
drivers (Docker and process today; add the next one to ``DRIVERS``); what only one driver
has (networks, hardening, pids) stays in its own test file."""

from __future__ import annotations

import uuid

import pytest

from apps.runtime.base import CAPABILITIES, NodeEvents, RuntimeDriver, supports
from apps.runtime.health import wait_healthy
from tests.runtime.conftest import auth_of

DRIVERS = ["process_driver", "docker_driver"]
HEALTH_TIMEOUT = 60.0


@pytest.fixture(params=DRIVERS)
def driver(request):
    return request.getfixturevalue(request.param)


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

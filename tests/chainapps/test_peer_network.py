"""Which nodes share an app's internal peer network (provisioning.node_join_peer_network):
only nodes on one Docker engine reach each other by container name over it; peers on
other engines are reached by their published endpoints, so a node with no sibling on its
engine makes no network (on three engines each node made a network holding itself alone:
~0.3 s of each warm node step, docs/benchmarks.md)."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest

from apps.chainapps import provisioning
from apps.chainapps.node_config import node_peers
from apps.runtime.base import Networks
from apps.runtime.drivers import clear_driver_cache
from tests.factories import RegionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_drivers():
    clear_driver_cache()
    yield
    clear_driver_cache()


def _node(name: str, region, endpoint: str = ""):
    return SimpleNamespace(
        pk=name,
        name=name,
        app_id="00000000-0000-0000-0000-000000000001",
        region=region,
        endpoint=endpoint,
        current_framework=SimpleNamespace(port=8080),
    )


def _driver():
    return mock.Mock(CAPABILITIES=(Networks,))


def _join(node, siblings):
    driver = _driver()
    spec = SimpleNamespace(name=node.name, app_labels={})
    node.siblings = siblings
    provisioning.node_join_peer_network(driver, node, spec)
    return driver


def test_nodes_on_one_engine_share_a_peer_network_and_name_each_other():
    a = RegionFactory(code="pn-a", driver="docker", docker_base_url="")
    b = RegionFactory(code="pn-b", driver="docker", docker_base_url="")
    one, two = _node("n-a", a), _node("n-b", b, endpoint="http://127.0.0.1:20001")
    driver = _join(one, [two])
    driver.ensure_internal_network.assert_called_once()
    driver.connect_to_network.assert_called_once()
    assert list(node_peers(one)) == ["http://n-b:8080"]


def test_a_node_whose_peers_are_on_other_engines_makes_no_peer_network():
    a = RegionFactory(code="pn-c", driver="docker", docker_base_url="")
    b = RegionFactory(code="pn-d", driver="docker", docker_base_url="unix:///run/bsn-elsewhere/docker.sock")
    one, two = _node("n-c", a), _node("n-d", b, endpoint="http://172.24.0.1:20001")
    driver = _join(one, [two])
    driver.ensure_internal_network.assert_not_called()
    driver.connect_to_network.assert_not_called()
    assert list(node_peers(one)) == ["http://172.24.0.1:20001"]  # its published endpoint


def test_one_peer_beside_it_is_enough_for_the_network():
    a = RegionFactory(code="pn-e", driver="docker", docker_base_url="")
    b = RegionFactory(code="pn-f", driver="docker", docker_base_url="")
    c = RegionFactory(code="pn-g", driver="docker", docker_base_url="unix:///run/bsn-elsewhere/docker.sock")
    driver = _join(_node("n-e", a), [_node("n-f", b), _node("n-g", c, endpoint="http://172.24.0.1:20002")])
    driver.ensure_internal_network.assert_called_once()

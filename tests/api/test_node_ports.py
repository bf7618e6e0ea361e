"""Host ports of ledger nodes: allocated once per node from BSN_NODE_PORT_RANGE."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps.chainapps.models import LedgerNode
from apps.chainapps.ports import host_port, node_release_host_port, port_range
from apps.runtime.base import PermanentRuntimeError
from tests.api.conftest import make_app


@pytest.fixture
def nodes(owner, regions) -> list[LedgerNode]:
    app = make_app(owner, "ports", regions=[r.code for r in regions])
    return list(app.nodes.order_by("region__code"))


def test_each_node_gets_its_own_port_once(nodes, settings):
    settings.BSN_NODE_PORT_RANGE = "21000-21010"
    first = [host_port(n) for n in nodes]
    assert first == [21000 + i for i in range(len(nodes))]
    assert [host_port(n) for n in nodes] == first  # kept, not re-allocated
    assert sorted(LedgerNode.objects.values_list("host_port", flat=True)) == first


def test_a_refused_port_moves_the_node_to_the_next_free_one(nodes, settings):
    settings.BSN_NODE_PORT_RANGE = "21000-21010"
    a, b = nodes[:2]
    assert host_port(a) == 21000 and host_port(b) == 21001
    assert host_port(a, refused=21000) == 21002  # 21001 is b's
    assert LedgerNode.objects.get(pk=a.pk).host_port == 21002


def test_released_ports_are_reused_and_an_exhausted_range_is_a_clear_error(nodes, settings):
    settings.BSN_NODE_PORT_RANGE = "21000-21000"
    a, b = nodes[:2]
    assert host_port(a) == 21000
    with pytest.raises(PermanentRuntimeError, match="no free host port left in BSN_NODE_PORT_RANGE 21000-21000"):
        host_port(b)
    node_release_host_port(a)
    assert host_port(b) == 21000


@pytest.mark.parametrize("raw", ["20000", "a-b", "30000-20000", "80-90", "60000-70000"])
def test_bad_port_ranges_are_refused(settings, raw):
    settings.BSN_NODE_PORT_RANGE = raw
    with pytest.raises(ImproperlyConfigured, match="BSN_NODE_PORT_RANGE"):
        port_range()


def test_ordering_members_take_ports_from_the_top_and_never_a_nodes(nodes, regions, settings):
    from apps.ordering.models import OrderingMember

    settings.BSN_NODE_PORT_RANGE = "21000-21002"
    member = OrderingMember.objects.create(index=0, region=regions[0], name="m0")
    assert host_port(member, from_top=True) == 21002
    assert host_port(nodes[0]) == 21000 and host_port(nodes[1]) == 21001
    with pytest.raises(PermanentRuntimeError):
        host_port(nodes[2])  # 21002 is the member's, in another table


def test_ports_the_engine_already_publishes_are_skipped(nodes, settings):
    settings.BSN_NODE_PORT_RANGE = "21000-21010"
    assert host_port(nodes[0], busy={21000, 21001}) == 21002

"""Apps on Swarm regions through the API (issue 12): how they are ordered, and what is
refused. No driver runs here (the worker is never asked: callbacks are captured)."""

from __future__ import annotations

import pytest

from apps.chainapps.models import ChainApp
from apps.regions.models import Region
from tests.api.conftest import assert_problem
from tests.factories import RegionFactory

URL = "/api/v1/apps"


@pytest.fixture
def mixed(db):
    return {
        "docker": RegionFactory(code="cn-docker", driver=Region.Driver.DOCKER),
        "swarm": RegionFactory(code="cn-swarm", driver=Region.Driver.SWARM),
        "swarm2": RegionFactory(code="cn-swarm-two", driver=Region.Driver.SWARM),
        "process": RegionFactory(code="cn-process", driver=Region.Driver.PROCESS),
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("regions", "ordering"),
    [
        (["cn-swarm"], ChainApp.Ordering.SOLO),  # one service needs no shared order
        (["cn-swarm", "cn-docker"], ChainApp.Ordering.ETCD),  # the members run on the Docker region
        (["cn-swarm", "cn-swarm-two"], ChainApp.Ordering.ETCD),
    ],
)
def test_an_app_on_swarm_regions_is_ordered_as_its_regions_need(
    owner_client, mixed, regions, ordering, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        resp = owner_client.post(URL, {"name": "on-swarm", "regions": regions}, format="json")
    assert resp.status_code == 202, resp.content
    app = ChainApp.objects.get(pk=resp.json()["app"])
    assert app.ordering == ordering
    assert sorted(app.nodes.values_list("region__code", flat=True)) == sorted(regions)


@pytest.mark.django_db
def test_a_swarm_region_with_a_process_region_is_refused_and_nothing_is_written(owner_client, mixed):
    resp = owner_client.post(URL, {"name": "mixed", "regions": ["cn-swarm", "cn-process"]}, format="json")
    assert_problem(resp, 400)
    assert "cn-process use the process driver" in str(resp.json())
    assert not ChainApp.objects.exists()


def test_a_swarm_node_is_refused_ordering_members_published_on_loopback():
    from types import SimpleNamespace

    from apps.chainapps.node_config import _refuse_loopback
    from apps.runtime.base import PermanentRuntimeError

    node = SimpleNamespace(name="bsn-x-cn-swarm", region=SimpleNamespace(code="cn-swarm"))
    _refuse_loopback(node, "http://172.28.5.1:29999,http://10.0.0.5:29998")  # reachable: fine
    with pytest.raises(PermanentRuntimeError, match="--publish-host that the swarm's hosts reach"):
        _refuse_loopback(node, "http://172.28.5.1:29999,http://127.0.0.1:29998")

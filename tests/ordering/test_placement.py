"""Where the ordering members go: over distinct engines first (issue 9), shown by status."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from apps.ordering.models import OrderingCluster, OrderingMember
from apps.ordering.services import member_placement
from apps.regions.models import Region
from tests.factories import RegionFactory


def _region(code: str, url: str = "") -> Region:
    return Region(code=code, driver=Region.Driver.DOCKER, docker_base_url=url)


def test_members_go_to_distinct_engines_first():
    local_a, local_b = _region("a-local"), _region("b-local")
    east, west = _region("c-east", "tcp://10.0.0.2:2376"), _region("d-west", "tcp://10.0.0.3:2376")
    assert [r.code for r in member_placement([local_a, local_b, east, west])] == ["a-local", "c-east", "d-west"]
    assert [r.code for r in member_placement([local_a, local_b, east])] == ["a-local", "c-east", "b-local"]
    assert [r.code for r in member_placement([local_a, local_b])] == ["a-local", "b-local", "a-local"]
    assert [r.code for r in member_placement([local_a])] == ["a-local"] * 3


@pytest.mark.django_db
def test_status_shows_each_members_engine_and_what_losing_one_costs(capsys):
    regions = [
        RegionFactory(code="one-a", driver="docker"),
        RegionFactory(code="two-b", driver="docker", docker_base_url="tcp://10.0.0.2:2376"),
    ]
    OrderingCluster.objects.create(pk=1, token="t", root_password_encrypted="x")
    for index, region in enumerate(member_placement(regions)):
        OrderingMember.objects.create(index=index, region=region, name=f"m{index}")
    call_command("bsn_ordering", "status")
    out = capsys.readouterr().out
    from django.conf import settings

    assert "ENGINE" in out and "tcp://10.0.0.2:2376" in out and settings.BSN_DOCKER_BASE_URL in out
    assert "placement: 3 members on 2 engine(s); losing one engine loses 2 members and the quorum" in out

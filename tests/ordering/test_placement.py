"""Where the ordering members go: over distinct engines first (issue 9), shown by status."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command

from apps.ordering import peer_tls
from apps.ordering.models import OrderingCluster, OrderingMember
from apps.ordering.services import member_placement
from apps.regions.models import Region
from tests.factories import RegionFactory


def _region(code: str, url: str = "") -> Region:
    return Region(code=code, driver=Region.Driver.DOCKER, docker_base_url=url)


def test_members_go_to_distinct_engines_first(settings):
    settings.BSN_ALLOW_INSECURE_ENGINES = True  # engines that are never called
    local_a, local_b = _region("a-local"), _region("b-local")
    east, west = _region("c-east", "tcp://10.0.0.2:2376"), _region("d-west", "tcp://10.0.0.3:2376")
    assert [r.code for r in member_placement([local_a, local_b, east, west])] == ["a-local", "c-east", "d-west"]
    assert [r.code for r in member_placement([local_a, local_b, east])] == ["a-local", "c-east", "b-local"]
    assert [r.code for r in member_placement([local_a, local_b])] == ["a-local", "b-local", "a-local"]
    assert [r.code for r in member_placement([local_a])] == ["a-local"] * 3


@pytest.mark.django_db
def test_status_shows_each_members_engine_and_what_losing_one_costs(capsys, settings):
    settings.BSN_ALLOW_INSECURE_ENGINES = True  # engines that are never called
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


@pytest.fixture
def spread_members(db, monkeypatch):
    """Three members over two engines that are never called (their published ports: none)."""
    from apps.ordering import services

    monkeypatch.setattr(services, "engine_busy_ports", lambda driver: set())

    def make(publish_hosts=("10.9.0.1", "10.9.1.1")):
        regions = [
            RegionFactory(code=f"p-{i}", driver="docker", docker_base_url=f"unix:///run/bsn-x{i}.sock", publish_host=h)
            for i, h in enumerate(publish_hosts)
        ]
        return [
            OrderingMember.objects.create(index=i, region=r, name=f"bsn-x-etcd-{i}")
            for i, r in enumerate(member_placement(regions))
        ]

    return make


def test_members_on_several_engines_peer_through_ports_published_on_their_hosts(spread_members):
    from apps.ordering.services import member_spec, peer_urls

    members = spread_members()
    cluster = OrderingCluster.objects.create(pk=1, token="t", root_password_encrypted="x")
    urls, published = peer_urls(members, cluster)
    assert published
    rows = list(OrderingMember.objects.select_related("region").order_by("index"))
    assert len({m.peer_host_port for m in rows}) == 3 and all(m.peer_host_port for m in rows)
    assert urls == {m.name: f"https://{m.region.publish_host}:{m.peer_host_port}" for m in rows}
    cluster.refresh_from_db()
    assert peer_urls(rows, cluster) == (urls, True)  # allocated once, kept
    assert [m.peer_cert for m in OrderingMember.objects.order_by("index")] == [m.peer_cert for m in rows]
    spec = member_spec(rows[0], cluster, [m.name for m in rows], urls=(urls, True))
    assert spec.extra_ports == ((2380, rows[0].peer_host_port),)
    assert f"--initial-advertise-peer-urls={urls[rows[0].name]}" in spec.command
    assert "--initial-cluster=" + ",".join(f"{m.name}={urls[m.name]}" for m in rows) in spec.command
    # Peers are admitted by a certificate of the cluster's own CA, made for the member's address.
    assert spec.command[0] == "etcd" and "--peer-client-cert-auth" in spec.command
    assert "--listen-peer-urls=https://0.0.0.0:2380" in spec.command
    assert (
        spec.secrets["BSN_ETCD_PEER_CA"] == cluster.peer_ca_cert and "PRIVATE KEY" in spec.secrets["BSN_ETCD_PEER_KEY"]
    )
    assert peer_tls.certificate_names(spec.secrets["BSN_ETCD_PEER_CERT"], cluster.peer_ca_cert, "10.9.0.1")
    assert "PRIVATE" not in rows[0].peer_key_encrypted + cluster.peer_ca_key_encrypted  # encrypted at rest
    # A member whose region moved to another address gets a new certificate.
    Region.objects.filter(pk=rows[0].region_id).update(publish_host="10.9.7.7")
    moved = list(OrderingMember.objects.select_related("region").order_by("index"))
    peer_urls(moved, cluster)
    assert peer_tls.certificate_names(moved[0].peer_cert, cluster.peer_ca_cert, "10.9.7.7")


def test_members_on_one_engine_peer_on_the_ordering_network_and_publish_no_peer_port(spread_members):
    from apps.ordering.services import member_spec, peer_urls

    region = spread_members()[0].region
    OrderingMember.objects.update(region=region)
    rows = list(OrderingMember.objects.select_related("region").order_by("index"))
    cluster = OrderingCluster.objects.create(pk=1, token="t", root_password_encrypted="x")
    urls, published = peer_urls(rows, cluster)
    assert not published and all(url.endswith("-ordering:2380") for url in urls.values())
    assert not any(m.peer_host_port for m in OrderingMember.objects.all())
    spec = member_spec(rows[0], cluster, [m.name for m in rows], urls=(urls, False))
    assert spec.extra_ports == () and spec.secrets == {} and "bsn.ledger.etcd_member" in spec.command


def test_members_spread_over_engines_that_publish_on_loopback_are_refused_with_the_reason(spread_members):
    from apps.ordering.services import OrderingMisconfigured, peer_urls

    members = spread_members(publish_hosts=("127.0.0.1", "10.9.1.1"))
    cluster = OrderingCluster.objects.create(pk=1, token="t", root_password_encrypted="x")
    with pytest.raises(OrderingMisconfigured, match="p-0 publish on a loopback address"):
        peer_urls(members, cluster)
    assert not any(m.peer_host_port for m in OrderingMember.objects.all())


@pytest.mark.django_db
def test_ordering_regions_docker_first_else_one_swarm_or_the_operators_choice(settings):
    from apps.ordering.services import OrderingMisconfigured, ordering_regions

    settings.BSN_ALLOW_INSECURE_ENGINES = True  # engines that are never called
    assert ordering_regions() == []
    swarm_a = RegionFactory(code="s-a", driver="swarm", docker_base_url="tcp://10.0.0.9:2376")
    RegionFactory(code="s-b", driver="swarm", docker_base_url="tcp://10.0.0.9:2376")
    assert [r.code for r in ordering_regions()] == ["s-a"]  # no Docker region: one swarm spreads them
    docker = RegionFactory(code="d-a", driver="docker")
    RegionFactory(code="p-a", driver="process")
    assert [r.code for r in ordering_regions()] == ["d-a"]  # Docker regions keep them, as before
    settings.BSN_ORDERING_REGIONS = ["s-a", "s-b"]
    assert [r.code for r in ordering_regions()] == ["s-a", "s-b"]
    for named, reason in (
        (["s-a", "d-a"], "mixes a swarm with other engines"),
        (["p-a"], "p-a cannot run the ordering members"),
        (["s-a", "nowhere"], "unknown region(s): nowhere"),
    ):
        settings.BSN_ORDERING_REGIONS = named
        with pytest.raises(OrderingMisconfigured, match=re.escape(reason)):
            ordering_regions()
    assert swarm_a.pk and docker.pk

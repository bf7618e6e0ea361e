"""Regions that are separate Docker engines (issue 9): one on its own unix socket, one over
TCP with TLS and client certificates (tests/engines.py starts both). Each starts without
the ledger image: the first container there gets it streamed from the control plane's
engine by content (apps/runtime/image_sync.py). An app on such a region provisions, its
ordering members run there too, it commits through the gateway, and its deletion leaves
nothing on that engine."""

from __future__ import annotations

import io
import tarfile
import uuid

import docker
import docker.tls
import pytest
import requests
from django.conf import settings

from apps.runtime import image_sync
from apps.runtime.docker import engine_client
from bsn.client import Client, generate_key
from tests.conftest import _client_for
from tests.engines import engine_region
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import operation_done, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@pytest.fixture
def api(transactional_db):
    return _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))


def _drop_ledger_images(client: docker.DockerClient) -> None:
    for image in client.images.list(name="bsn/ledger"):
        client.images.remove(image.id, force=True)
    image_sync.forget()


def _empty_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("stale")
        tar.addfile(info, io.BytesIO(b""))
    return buffer.getvalue()


def _managed(client: docker.DockerClient) -> list[str]:
    selector = {"label": "io.bsn.managed=true"}
    # The low-level lists: no inspect per object, which another test's removal may race.
    containers = [name.lstrip("/") for c in client.api.containers(all=True, filters=selector) for name in c["Names"]]
    networks = [n["Name"] for n in client.api.networks(filters=selector)]
    volumes = [v["Name"] for v in (client.api.volumes(filters=selector).get("Volumes") or [])]
    return sorted(containers + networks + volumes)


def _engine_story(client: docker.DockerClient) -> str:
    """What each container on the engine says, for a failure message."""
    lines = []
    for container in client.containers.list(all=True):
        tail = container.logs(tail=8).decode("utf-8", "replace")
        lines.append(f"--- {container.name} {container.status} {container.ports}\n{tail}")
    return "\n".join(lines)


def _run_app_on(api, region, engine_client) -> None:
    resp = api.post("/api/v1/apps", {"name": f"far-{region.code[-8:]}", "regions": [region.code]}, format="json")
    assert resp.status_code == 202, resp.content
    try:
        op = operation_done(api, resp["Location"], timeout=180)
    except BaseException:
        print(_engine_story(engine_client))
        raise
    assert op["status"] == "succeeded", (op.get("last_error"), op.get("log", [])[-6:], _engine_story(engine_client))
    app_id = resp.json()["app"]
    (node,) = api.get(f"/api/v1/apps/{app_id}/nodes").json()["results"]
    assert node["state"] == "running"
    names = {c.name for c in engine_client.containers.list()}
    assert any(name.endswith(region.code) for name in names), names  # the node runs on that engine
    assert sum("-etcd-" in name for name in names) == 3  # and so does the ordering service
    private, public = generate_key()
    assert (
        api.post(f"/api/v1/apps/{app_id}/users", {"name": "alice", "public_key": public}, format="json").status_code
        == 201
    )
    signer = Client("http://unused", "-", app_id, "alice", private)
    for i in range(3):
        reply = api.post(
            f"/api/v1/apps/{app_id}/transactions", signer.sign("kv", "put", {"key": "k", "value": i}), format="json"
        )
        assert reply.status_code == 200 and reply.json()["status"] == "committed", reply.content
    state = api.get(f"/api/v1/apps/{app_id}/state/kv/k").json()
    assert state["value"] == 2, state
    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    assert operation_done(api, resp["Location"], timeout=120)["status"] == "succeeded"
    left = [name for name in _managed(engine_client) if "-etcd-" not in name and "-ordering" not in name]
    assert left == [], left


def test_an_app_on_a_second_engine_gets_the_image_by_content_and_leaves_nothing(
    api, extra_engines, worker_factory, docker_engine
):
    engine = extra_engines["e2"]
    client = engine.client()
    _drop_ledger_images(client)
    tag = uuid.uuid4().hex[:6]
    region = engine_region(engine, f"it{tag}-0", "second engine")
    worker_factory([region])
    _run_app_on(api, region, client)
    want = docker_engine.images.get(settings.BSN_LEDGER_IMAGE).id
    assert client.images.get(settings.BSN_LEDGER_IMAGE).id == want  # the same content, not just the tag


def test_an_app_on_an_engine_over_tls_with_client_certificates(api, extra_engines, worker_factory, docker_engine):
    engine = extra_engines["e3"]
    ca = str(engine.root / "client" / "ca.pem")
    with pytest.raises((docker.errors.DockerException, OSError)):  # trusts the engine, has no client certificate
        engine_client(engine.base_url, timeout=5, tls=docker.tls.TLSConfig(ca_cert=ca, verify=ca)).ping()
    client = engine.client()
    _drop_ledger_images(client)
    # A stale image under the same tag (another content) is replaced by the right one.
    repository, _, version = settings.BSN_LEDGER_IMAGE.rpartition(":")
    client.api.import_image_from_data(_empty_tar(), repository=repository, tag=version)
    assert client.images.get(settings.BSN_LEDGER_IMAGE).id != docker_engine.images.get(settings.BSN_LEDGER_IMAGE).id
    tag = uuid.uuid4().hex[:6]
    region = engine_region(engine, f"it{tag}-0", "tls engine")
    worker_factory([region])
    _run_app_on(api, region, client)
    assert client.images.get(settings.BSN_LEDGER_IMAGE).id == docker_engine.images.get(settings.BSN_LEDGER_IMAGE).id


def test_an_app_across_three_engines_replicates_and_its_ordering_spans_them(
    api, extra_engines, worker_factory, docker_engine
):
    """One node per engine (main, e2 over a unix socket, e3 over TLS); the ordering
    members land one per engine and peer through published ports on the hosts' addresses;
    the nodes reach each other and the members by published endpoints."""
    from apps.ordering.models import OrderingMember
    from apps.runtime.drivers import engine_key

    main, e2, e3 = extra_engines["main"], extra_engines["e2"], extra_engines["e3"]
    tag = uuid.uuid4().hex[:6]
    regions = [engine_region(e, f"it{tag}-{i}", e.name) for i, e in enumerate((main, e2, e3))]
    worker_factory(regions)
    resp = api.post("/api/v1/apps", {"name": "spread", "regions": [r.code for r in regions]}, format="json")
    assert resp.status_code == 202, resp.content
    clients = {"main": docker_engine, "e2": e2.client(), "e3": e3.client()}
    try:
        op = operation_done(api, resp["Location"], timeout=240)
    except BaseException:
        print("\n".join(_engine_story(c) for c in clients.values()))
        raise
    assert op["status"] == "succeeded", (op.get("last_error"), op.get("log", [])[-6:])
    app_id = resp.json()["app"]

    members = list(OrderingMember.objects.select_related("region"))
    assert len({engine_key(m.region) for m in members}) == 3  # one member per engine
    assert all(m.peer_host_port for m in members)  # peering through published ports

    private, public = generate_key()
    added = api.post(f"/api/v1/apps/{app_id}/users", {"name": "alice", "public_key": public}, format="json")
    if added.status_code != 201:
        print(added.content, "\n".join(_engine_story(c) for c in clients.values()))
    assert added.status_code == 201
    signer = Client("http://unused", "-", app_id, "alice", private)
    for i in range(10):
        envelope = signer.sign("kv", "put", {"key": f"k{i}", "value": i})
        reply = api.post(f"/api/v1/apps/{app_id}/transactions", envelope, format="json")
        assert reply.status_code == 200 and reply.json()["status"] == "committed", reply.content
    top = reply.json()["height"]

    def replicated():
        nodes = api.get(f"/api/v1/apps/{app_id}/nodes").json()["results"]
        heads = {(n["chain_height"], n["chain_head"]) for n in nodes}
        return nodes if len(nodes) == 3 and len(heads) == 1 and (nodes[0]["chain_height"] or 0) >= top else None

    nodes = wait_for(replicated, timeout=60, interval=0.5, message="every node at the same head")
    # A stranger on a member's published peer port (any container on that host can reach
    # it) gets no raft: without a certificate of the cluster's CA the handshake fails.
    for member in members:
        url = f"https://{member.region.publish_host}:{member.peer_host_port}/members"
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(url, verify=False, timeout=5)  # noqa: S501 - a stranger does not verify either
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(url.replace("https://", "http://"), timeout=5)
    assert {n["region"] for n in nodes} == {r.code for r in regions}
    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    assert operation_done(api, resp["Location"], timeout=120)["status"] == "succeeded"
    for name, client in clients.items():
        left = [n for n in _managed(client) if tag in n]
        assert left == [], (name, left)

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
from django.conf import settings

from apps.regions.engine_tls import EngineTLS
from apps.regions.services import region_add
from apps.runtime import image_sync
from apps.runtime.docker import engine_client
from bsn.client import Client, generate_key
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import operation_done

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
    return sorted(
        [c.name for c in client.containers.list(all=True, filters=selector)]
        + [n.name for n in client.networks.list(filters=selector)]
        + [v.name for v in client.volumes.list(filters=selector)]
    )


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
    region = region_add(
        code=f"it{tag}-0", name="second engine", driver="docker", docker_base_url=engine.base_url,
        publish_host="127.0.0.1",
    )  # fmt: skip
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
    material = engine.tls
    region = region_add(
        code=f"it{tag}-0", name="tls engine", driver="docker", docker_base_url=engine.base_url,
        publish_host="127.0.0.1",
        tls=EngineTLS(ca=material.ca, cert=material.client_cert, key=material.client_key),
    )  # fmt: skip
    worker_factory([region])
    _run_app_on(api, region, client)
    assert client.images.get(settings.BSN_LEDGER_IMAGE).id == docker_engine.images.get(settings.BSN_LEDGER_IMAGE).id

"""Shared fixtures: service checks (fail under CI, skip otherwise), actors, API clients."""

from __future__ import annotations

import os

import pytest
from rest_framework.test import APIClient

from apps.regions.models import Region
from apps.tenants.models import Role
from apps.tenants.services import token_issue
from tests.factories import MembershipFactory, RegionFactory, TenantFactory

IN_CI = bool(os.environ.get("CI"))


def require(condition: bool, what: str) -> None:
    """A missing service fails the test under CI and skips it elsewhere — never silently."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required when CI is set", pytrace=False)
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis
    from django.conf import settings

    url = settings.CELERY_BROKER_URL
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        ok = True
    except Exception:  # noqa: BLE001
        ok = False
    require(ok, f"Redis at {url}")
    return url


@pytest.fixture(scope="session")
def docker_engine():
    import docker
    from django.conf import settings

    try:
        client = docker.DockerClient(base_url=settings.BSN_DOCKER_BASE_URL, timeout=10)
        client.ping()
    except Exception:  # noqa: BLE001
        client = None
    require(client is not None, "a Docker engine")
    return client


@pytest.fixture(scope="session")
def ledger_image(docker_engine) -> str:
    import docker
    from django.conf import settings

    try:
        docker_engine.images.get(settings.BSN_LEDGER_IMAGE)
        ok = True
    except docker.errors.ImageNotFound:
        ok = False
    require(ok, f"the ledger image {settings.BSN_LEDGER_IMAGE} (run `manage.py bsn_images build`)")
    return settings.BSN_LEDGER_IMAGE


ENGINES_STATE = "/var/lib/bsn-test-engines"  # data roots kept between runs (images stay loaded)


@pytest.fixture(scope="session")
def extra_engines(docker_engine, ledger_image):
    """Two more Docker engines on this machine (tests/engines.py): ``e2`` on its own unix
    socket, ``e3`` over TCP with TLS and client certificates. Stopped at the end."""
    from pathlib import Path

    from tests.engines import PUBLISH_NETWORK, clear_engine, engines_lock, main_engine, start_extra_engines

    lock = engines_lock(Path(ENGINES_STATE))  # one test session at a time owns these engines
    started, problem = [], ""
    try:
        started = start_extra_engines(Path(ENGINES_STATE))
    except (OSError, RuntimeError) as exc:
        problem = str(exc)
    require(not problem and len(started) == 2, f"two more Docker engines ({problem})")
    main = main_engine(docker_engine, Path(ENGINES_STATE))
    yield {"main": main, **{e.name: e for e in started}}
    try:
        docker_engine.networks.get(PUBLISH_NETWORK).remove()
    except Exception:  # noqa: BLE001, S110 - best effort: in use by a leftover, or gone
        pass
    for engine in started:
        try:
            client = engine.client()
            clear_engine(client)
            client.close()
        except Exception:  # noqa: BLE001, S110 - best effort before the engine stops
            pass
        engine.stop()
    lock.close()


SWARM_POOL = "172.26.0.0/16"  # the swarm's overlay networks: apart from every engine's own pool


@pytest.fixture(scope="session")
def swarm_engine(extra_engines):
    """Engine ``e2`` as a one-host Docker Swarm (``docker swarm init`` on loopback) for the
    swarm driver (apps/runtime/swarm.py); it leaves the swarm at the end, so e2 is a plain
    engine again for everything else. Never the main engine: other tests use it.
    Its host is labelled where its published ports are reached (``io.bsn.publish-host``:
    the engine's publish address, reachable from other engines' containers too); regions
    label it with ``swarm_label_region``."""
    import docker

    from apps.runtime.swarm import NODE_LABEL_PUBLISH_HOST
    from tests.engines import clear_engine

    engine = extra_engines["e2"]
    client = engine.client()
    if (client.info().get("Swarm") or {}).get("LocalNodeState") != "inactive":
        client.swarm.leave(force=True)  # a swarm an interrupted run left behind
    # What earlier tests of this session left on e2 (their nodes run the ledger image, which
    # the swarm tests remove to start without it: "image is being used by running container").
    clear_engine(client)
    client.swarm.init(
        advertise_addr="127.0.0.1",
        listen_addr="127.0.0.1:2377",
        default_addr_pool=[SWARM_POOL],
        subnet_size=24,
    )
    swarm_label_node(client, {NODE_LABEL_PUBLISH_HOST: engine.publish_host, "io.bsn.region.cn-test": "true"})
    yield engine
    try:
        for service in client.services.list():
            if service.name.startswith("bsn-"):
                service.remove()
        client.swarm.leave(force=True)
    except docker.errors.DockerException as exc:  # the engine stops next anyway
        print(f"leaving the test swarm: {exc}")
    client.close()


def swarm_label_node(client, labels: dict[str, str]) -> None:
    """Add ``labels`` to the swarm's (only) host."""
    node_id = client.info()["Swarm"]["NodeID"]
    node = client.api.inspect_node(node_id)
    spec = dict(node["Spec"])
    spec["Labels"] = {**(spec.get("Labels") or {}), **labels}
    client.api.update_node(node_id, node["Version"]["Index"], spec)


def swarm_region(engine, code: str, name: str = "swarm"):
    """Register a Swarm region on the test swarm (``region_add``, as ``bsn_region add
    --driver swarm`` does) and label the swarm's host as one of the region's hosts."""
    from apps.regions.services import region_add

    client = engine.client()
    try:
        swarm_label_node(client, {f"io.bsn.region.{code}": "true"})
    finally:
        client.close()
    return region_add(
        code=code, name=name, driver="swarm", docker_base_url=engine.base_url, publish_host=engine.publish_host
    )


def _client_for(membership) -> APIClient:
    client = APIClient()
    issued = token_issue(membership=membership, name="test")
    client.credentials(HTTP_AUTHORIZATION=f"Token {issued.secret}")
    client.membership = membership
    return client


@pytest.fixture
def tenant_a(db):
    return TenantFactory(slug="acme")


@pytest.fixture
def tenant_b(db):
    return TenantFactory(slug="globex")


@pytest.fixture
def owner(tenant_a):
    return MembershipFactory(tenant=tenant_a, role=Role.OWNER, user__username="alice")


@pytest.fixture
def member(tenant_a):
    return MembershipFactory(tenant=tenant_a, role=Role.DEVELOPER, user__username="bob")


@pytest.fixture
def outsider(tenant_b):
    return MembershipFactory(tenant=tenant_b, role=Role.OWNER, user__username="mallory")


@pytest.fixture
def owner_client(owner) -> APIClient:
    return _client_for(owner)


@pytest.fixture
def member_client(member) -> APIClient:
    return _client_for(member)


@pytest.fixture
def outsider_client(outsider) -> APIClient:
    return _client_for(outsider)


@pytest.fixture
def client_with_role(tenant_a):
    """Factory: an API client whose user has the given role in tenant A."""

    def make(role: str) -> APIClient:
        return _client_for(MembershipFactory(tenant=tenant_a, role=role))

    return make


@pytest.fixture
def regions(db):
    """Three active Docker regions. API tests never run a driver, so no engine is needed;
    Docker because apps on several regions need etcd ordering, which only Docker offers."""
    return [
        RegionFactory(code=code, name=code, driver=Region.Driver.DOCKER)
        for code in ("cn-beijing", "cn-shanghai", "cn-shenzhen")
    ]

"""Fixtures for runtime driver tests.

Integration tests run against the real Docker Engine and the real ledger program.
Without them a test is skipped — unless ``CI`` is set, where it fails loudly instead,
so a CI run can never pass by skipping the driver tests.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.runtime.nodeapi import NodeAuth
from apps.runtime.spec import LABEL_INSTALLATION, NodeSpec, build_node_spec
from bsn.ledger.auth import generate_credential
from bsn.ledger.crypto import generate_private_key, public_key_of

DEFAULT_IMAGE = "bsn/ledger:latest"
LEDGER_PORT = 7000


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} — CI is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


def _setting(name: str, default: Any) -> Any:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        return getattr(settings, name, default)
    except ImproperlyConfigured:  # run without --ds: plain defaults
        return default


@pytest.fixture(scope="session")
def docker_base_url() -> str:
    return _setting("BSN_DOCKER_BASE_URL", "unix:///var/run/docker.sock")


@pytest.fixture(scope="session")
def ledger_image() -> str:
    return _setting("BSN_LEDGER_IMAGE", DEFAULT_IMAGE)


@pytest.fixture(scope="session")
def docker_client(docker_base_url: str, ledger_image: str) -> Iterator[Any]:
    import docker

    try:
        client = docker.DockerClient(base_url=docker_base_url, timeout=30, version="auto")
        client.ping()
    except docker.errors.DockerException as exc:
        unavailable(f"no Docker engine at {docker_base_url}: {exc}")
    try:
        client.images.get(ledger_image)
    except docker.errors.ImageNotFound:
        unavailable(f"image {ledger_image} missing: run `python manage.py bsn_images build`")
    yield client
    client.close()


@pytest.fixture
def installation_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def make_spec(installation_id: str, ledger_image: str) -> Callable[..., NodeSpec]:
    """Build a spec for a fresh app of this test's installation; override any argument."""

    def factory(**overrides: Any) -> NodeSpec:
        values: dict[str, Any] = {
            "installation_id": installation_id,
            "tenant_id": uuid.uuid4().hex,
            "app_id": uuid.uuid4().hex,
            "node_id": uuid.uuid4().hex,
            "region_code": "cn-test",
            "generation": 1,
            "image": ledger_image,
            "command": None,
            "port": LEDGER_PORT,
            "health_path": "/health",
            "publish_host": "127.0.0.1",
            "mem_limit_mb": 128,
            "cpus": 0.5,
            "pids_limit": 64,
            # Delivered as files by the drivers, as the control plane's node specs are.
            "secrets": {
                "BSN_NODE_PRIVATE_KEY": generate_private_key(),
                "BSN_NODE_API_CREDENTIAL": generate_credential(),
            },
        }
        values.update(overrides)
        return build_node_spec(**values)

    return factory


def auth_of(spec: NodeSpec) -> NodeAuth:
    """How the control plane calls the node of ``spec`` (its credential and identity)."""
    return NodeAuth(
        key=spec.secrets["BSN_NODE_API_CREDENTIAL"].encode(),
        app_id=spec.env["BSN_APP_ID"],
        node_id=spec.env["BSN_NODE_ID"],
        public_key=public_key_of(spec.secrets["BSN_NODE_PRIVATE_KEY"]),
    )


def remove_installation_objects(client: Any, installation_id: str) -> None:
    """Remove every container, volume and network labelled with this installation."""
    import docker

    filters = {"label": [f"{LABEL_INSTALLATION}={installation_id}"]}
    for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
    for volume in client.volumes.list(filters=filters):
        try:
            volume.remove(force=True)
        except docker.errors.NotFound:
            pass
    for network in client.networks.list(filters=filters):
        try:
            network.remove()
        except docker.errors.NotFound:
            pass


@pytest.fixture
def docker_driver(docker_client: Any, docker_base_url: str, installation_id: str) -> Iterator[Any]:
    from apps.runtime.docker import DockerDriver

    yield DockerDriver(docker_base_url, timeout=30)
    remove_installation_objects(docker_client, installation_id)


@pytest.fixture
def swarm_client(swarm_engine: Any) -> Iterator[Any]:
    client = swarm_engine.client()
    yield client
    client.close()


@pytest.fixture
def swarm_driver(swarm_engine: Any, swarm_client: Any, docker_base_url: str, installation_id: str) -> Iterator[Any]:
    """The swarm driver on the test swarm (tests/conftest.py ``swarm_engine``), region
    ``cn-test`` (make_spec's), loading the image from the main engine; everything labelled
    with this test's installation is removed afterwards."""
    from apps.runtime.swarm import SwarmDriver

    yield SwarmDriver(
        swarm_engine.base_url,
        timeout=30,
        region_code="cn-test",
        image_source_url=docker_base_url,
        health_interval=2,  # tests: Swarm's verdicts in seconds (production default 10 s)
    )
    remove_swarm_objects(swarm_client, installation_id)


def remove_swarm_objects(client: Any, installation_id: str) -> None:
    """Services, secrets, then volumes and networks labelled with this installation."""
    import time

    import docker

    selector = {"label": [f"{LABEL_INSTALLATION}={installation_id}"]}
    for service in client.api.services(filters=selector):
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_service(service["ID"])
    deadline = time.monotonic() + 30
    while client.api.containers(all=True, filters=selector) and time.monotonic() < deadline:
        time.sleep(0.3)
    for secret in client.api.secrets(filters=selector):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_secret(secret["ID"])
    for _ in range(40):  # an overlay network is "in use" for a moment after its last task
        try:
            remove_installation_objects(client, installation_id)
            return
        except docker.errors.APIError:
            time.sleep(0.5)


@pytest.fixture
def foreign_objects(docker_client: Any) -> Iterator[list[Any]]:
    """Unlabelled objects a test creates on purpose; removed by the test, not the driver."""
    import docker
    from docker.models.containers import Container
    from docker.models.networks import Network

    created: list[Any] = []
    yield created
    for obj in reversed(created):
        with contextlib.suppress(docker.errors.NotFound):
            if isinstance(obj, Container):
                obj.remove(force=True, v=True)
            elif isinstance(obj, Network):
                obj.remove()
            else:
                obj.remove(force=True)


@pytest.fixture(scope="session")
def ledger_program() -> Path:
    from apps.runtime.process import MODULE, REPO_ROOT

    package = REPO_ROOT.joinpath(*MODULE.split("."))
    if not (package / "__main__.py").is_file():
        unavailable(f"ledger program {package}/__main__.py missing")
    return package


@pytest.fixture
def process_driver(tmp_path: Path, ledger_program: Path) -> Iterator[Any]:
    from apps.runtime.process import ProcessDriver

    driver = ProcessDriver(tmp_path / "nodes")
    yield driver
    # The root is this test's own: stop every node in it, whatever its installation.
    if driver.root_dir.is_dir():
        for node_dir in driver.root_dir.iterdir():
            if node_dir.is_dir():
                driver._terminate(node_dir)

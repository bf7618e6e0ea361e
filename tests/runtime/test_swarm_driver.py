"""What only the Swarm driver does, against a real one-host swarm (engine e2 after
``docker swarm init``, tests/conftest.py ``swarm_engine``). The behaviour every driver
shares is in test_driver_conformance.py."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace

import docker
import pytest

from apps.runtime.base import PermanentRuntimeError
from apps.runtime.health import wait_healthy
from apps.runtime.spec import LABEL_GENERATION, LABEL_INSTALLATION, NodeSpec
from apps.runtime.swarm import SwarmDriver
from bsn.ledger.auth import generate_credential
from tests.runtime.conftest import auth_of

pytestmark = [pytest.mark.docker]

HEALTH_TIMEOUT = 60.0


def task_container(client, spec: NodeSpec):
    """The running container of the node's service on the swarm's host."""
    found = client.containers.list(filters={"label": f"com.docker.swarm.service.name={spec.name}"})
    assert found, f"no running task container of {spec.name}"
    return found[0]


def _wait(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


def test_a_node_is_a_hardened_service_with_its_secrets_as_swarm_secrets(swarm_driver, swarm_client, make_spec):
    spec = make_spec()
    status = swarm_driver.ensure_node(spec)
    wait_healthy(status.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))

    service = swarm_client.api.inspect_service(spec.name)
    # No secret value anywhere in what `docker service inspect` shows, nor in the task's
    # container configuration: the environment only names the files.
    shown = json.dumps(service) + json.dumps(task_container(swarm_client, spec).attrs)
    for value in spec.secrets.values():
        assert value not in shown
    task = service["Spec"]["TaskTemplate"]
    container = task["ContainerSpec"]
    env = dict(line.split("=", 1) for line in container["Env"])
    assert env["BSN_NODE_API_CREDENTIAL_FILE"] == "/run/secrets/bsn_node_api_credential"
    assert {s["File"]["Name"] for s in container["Secrets"]} == {"bsn_node_private_key", "bsn_node_api_credential"}
    assert all(s["File"]["Mode"] == 0o400 and s["File"]["UID"] == "10001" for s in container["Secrets"])
    # The hardening of a container, as a service.
    assert container["User"] == "10001:10001" and container["ReadOnly"] is True and container["Init"] is True
    assert container["CapabilityDrop"] == ["ALL"]
    assert task["Resources"]["Limits"] == {"MemoryBytes": 128 * 1024 * 1024, "NanoCPUs": 500_000_000, "Pids": 64}
    assert service["Spec"]["Mode"] == {"Replicated": {"Replicas": 1}}
    assert service["Spec"]["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
    assert "node.labels.io.bsn.region.cn-test==true" in task["Placement"]["Constraints"]
    # Not pinned (it catches up from its peers and etcd wherever Swarm puts it); a solo
    # node is (tests/integration/test_swarm_hosts.py).
    assert not any(c.startswith("node.id==") for c in task["Placement"]["Constraints"])
    # The image by content: the service names the image id the host holds.
    assert container["Image"] == swarm_client.images.get(spec.image).id
    # What the running container really got.
    running = task_container(swarm_client, spec)
    host = running.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] is True and host["PidsLimit"] == 64
    assert not host["Privileged"] and host["NetworkMode"] != "host"
    mounts = running.exec_run(["cat", "/proc/mounts"], user="10001").output.decode()
    tmp = next(line for line in mounts.splitlines() if " /tmp " in line)
    assert "noexec" in tmp and "nosuid" in tmp
    assert running.exec_run(["id", "-u"]).output.decode().strip() == "10001"
    credential = running.exec_run(["cat", "/run/secrets/bsn_node_api_credential"], user="10001")
    assert credential.output.decode() == spec.secrets["BSN_NODE_API_CREDENTIAL"]
    assert running.exec_run(["sh", "-c", "echo x > /x"], user="10001").exit_code != 0  # read-only root
    # The app's overlay network is encrypted and ours.
    network = swarm_client.api.inspect_network(spec.network)
    assert network["Driver"] == "overlay" and "encrypted" in network["Options"]
    assert network["Labels"][LABEL_INSTALLATION] == spec.labels[LABEL_INSTALLATION]
    swarm_driver.remove_node(spec, keep_data=False)
    swarm_driver.remove_network(spec)
    assert not swarm_client.api.secrets(filters={"label": f"{LABEL_INSTALLATION}={spec.labels[LABEL_INSTALLATION]}"})
    assert not swarm_client.api.networks(names=[spec.network])


def test_swarm_restarts_a_killed_task_by_itself_on_the_same_endpoint(swarm_driver, swarm_client, make_spec):
    spec = make_spec(host_port=None)
    first = swarm_driver.ensure_node(replace(spec, host_port=_free_port(swarm_driver)))
    spec = replace(spec, host_port=int(first.endpoint.rsplit(":", 1)[1]))
    wait_healthy(first.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    task_container(swarm_client, spec).kill()
    # Nobody calls the driver: Swarm starts a new task (a new container) on the same port.
    again = _wait(
        lambda: (s := swarm_driver.observe(spec)).state == "running" and s.runtime_id != first.runtime_id and s,
        what="a new task",
    )
    assert again.endpoint == first.endpoint
    wait_healthy(again.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    services = [s for s in swarm_client.api.services() if s["Spec"]["Name"] == spec.name]
    assert len(services) == 1  # and ensure_node never starts a second one beside it
    assert swarm_driver.ensure_node(spec).runtime_id == again.runtime_id


def _free_port(driver: SwarmDriver) -> int:
    import socket

    taken = driver.published_ports()
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port


def test_a_rotated_secret_is_a_new_swarm_secret_and_the_old_one_goes(swarm_driver, swarm_client, make_spec):
    spec = make_spec()
    first = swarm_driver.ensure_node(spec)
    wait_healthy(first.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    rotated = replace(
        spec,
        secrets={**spec.secrets, "BSN_NODE_API_CREDENTIAL": generate_credential()},
        labels={**spec.labels, LABEL_GENERATION: "2"},
    )
    status = swarm_driver.ensure_node(rotated)
    wait_healthy(status.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(rotated))
    assert swarm_driver.update_status(rotated)["state"] == "completed"
    names = {s["Spec"]["Labels"]["io.bsn.secret"] for s in _secrets_of(swarm_client, spec)}
    assert names == {"BSN_NODE_PRIVATE_KEY", "BSN_NODE_API_CREDENTIAL"}  # one each: the old credential went
    got = task_container(swarm_client, spec).exec_run(["cat", "/run/secrets/bsn_node_api_credential"], user="10001")
    assert got.output.decode() == rotated.secrets["BSN_NODE_API_CREDENTIAL"]


def _secrets_of(client, spec):
    return client.api.secrets(filters={"label": f"{LABEL_INSTALLATION}={spec.labels[LABEL_INSTALLATION]}"})


def test_a_rolling_update_that_fails_its_health_check_is_rolled_back(
    swarm_driver, swarm_client, make_spec, monkeypatch
):
    spec = make_spec()
    first = swarm_driver.ensure_node(spec)
    wait_healthy(first.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    # The new generation starts but never answers /health: a command that only sleeps.
    broken = replace(spec, command=("sleep", "600"), labels={**spec.labels, LABEL_GENERATION: "2"})
    monkeypatch.setattr(swarm_driver, "UPDATE_TIMEOUT", 240.0)  # a loaded machine: 30 s start period + checks
    with pytest.raises(PermanentRuntimeError, match="rolled it back"):
        swarm_driver.ensure_node(broken)
    # Swarm put the previous generation back: the node serves again as itself.
    back = _wait(lambda: (s := swarm_driver.observe(spec)).state == "running" and s, what="the rollback")
    assert back.labels[LABEL_GENERATION] == "1"
    wait_healthy(back.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))


def test_a_foreign_service_under_our_name_is_refused_and_left_alone(swarm_driver, swarm_client, make_spec):
    spec = make_spec()
    foreign = swarm_client.services.create("busybox", name=spec.name, mode={"Replicated": {"Replicas": 0}})
    try:
        with pytest.raises(PermanentRuntimeError, match="not owned"):
            swarm_driver.ensure_node(spec)
        with pytest.raises(PermanentRuntimeError, match="not owned"):
            swarm_driver.remove_node(spec, keep_data=False)
        assert swarm_driver.observe(spec).state == "missing"
        assert swarm_client.api.inspect_service(foreign.id)["Spec"]["Name"] == spec.name
    finally:
        foreign.remove()


def test_a_region_without_labelled_hosts_refuses_with_a_clear_reason(swarm_engine, docker_base_url, make_spec):
    driver = SwarmDriver(
        swarm_engine.base_url,
        timeout=30,
        region_code=f"nowhere{uuid.uuid4().hex[:6]}",
        image_source_url=docker_base_url,
    )
    with pytest.raises(PermanentRuntimeError, match=r"no ready swarm host carries the label io\.bsn\.region\.nowhere"):
        driver.ensure_node(make_spec())


def test_a_plain_engine_is_not_a_swarm(docker_base_url):
    driver = SwarmDriver(docker_base_url, timeout=10, region_code="cn-test")
    with pytest.raises(PermanentRuntimeError, match="not a swarm manager"):
        driver.ping()
    with pytest.raises(docker.errors.DockerException):  # the SDK says the same
        docker.DockerClient(base_url=docker_base_url).services.list()


def test_an_image_no_host_can_get_is_refused_with_the_reason_and_nothing_is_scheduled(
    swarm_driver, swarm_client, make_spec
):
    spec = make_spec(image=f"bsn/ledger:nowhere-{uuid.uuid4().hex[:8]}")
    with pytest.raises(PermanentRuntimeError, match=r"cannot reach any host of region cn-test.*neither on the engine"):
        swarm_driver.ensure_node(spec)
    assert not [s for s in swarm_client.api.services() if s["Spec"]["Name"] == spec.name]
    assert not swarm_client.api.networks(names=[spec.network])  # nothing made before the refusal
    assert not swarm_client.api.secrets(filters={"label": f"{LABEL_INSTALLATION}={spec.labels[LABEL_INSTALLATION]}"})


def test_a_host_port_taken_outside_swarm_is_port_in_use_and_leaves_no_service(
    swarm_driver, swarm_client, make_spec, ledger_image, foreign_objects
):
    from apps.runtime.base import PortInUse

    port = _free_port(swarm_driver)
    holder = swarm_client.containers.run(
        ledger_image, detach=True, name=f"bsn-holder-{uuid.uuid4().hex[:6]}", ports={"8080/tcp": port}
    )
    foreign_objects.append(holder)
    spec = make_spec(host_port=port)
    with pytest.raises(PortInUse) as raised:
        swarm_driver.ensure_node(spec)
    assert raised.value.port == port
    assert not [s for s in swarm_client.api.services() if s["Spec"]["Name"] == spec.name]
    # The next port works (what provisioning does: ports.start_on_own_port).
    status = swarm_driver.ensure_node(replace(spec, host_port=_free_port(swarm_driver)))
    wait_healthy(status.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))

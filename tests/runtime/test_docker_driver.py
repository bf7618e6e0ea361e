"""DockerDriver against the real Docker Engine and the real ledger image.

Every test uses a fresh installation id; the ``docker_driver`` fixture removes every
object labelled with it afterwards.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import tarfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from apps.runtime.base import PermanentRuntimeError, PortInUse, RuntimeUnavailable, TransientRuntimeError
from apps.runtime.docker import DockerDriver
from apps.runtime.health import wait_healthy
from apps.runtime.spec import LABEL_INSTALLATION
from tests.runtime.conftest import auth_of

HEALTH_TIMEOUT = 60.0


def labelled(client, installation_id):
    filters = {"label": [f"{LABEL_INSTALLATION}={installation_id}"]}
    return (
        client.containers.list(all=True, filters=filters),
        client.volumes.list(filters=filters),
        client.networks.list(filters=filters),
    )


def put_file(container, directory: str, name: str, content: bytes) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.uid = info.gid = 10001
        tar.addfile(info, io.BytesIO(content))
    assert container.put_archive(directory, buf.getvalue())


def get_file(container, path: str) -> bytes:
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.getmembers()[0]
        return tar.extractfile(member).read()


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def test_ensure_runs_a_hardened_healthy_node(docker_driver, docker_client, make_spec):
    spec = make_spec()
    status = docker_driver.ensure_node(spec)

    assert status.state == "running"
    assert status.endpoint.startswith("http://127.0.0.1:")
    assert wait_healthy(status.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec)) is not None

    attrs = docker_client.containers.get(spec.name).attrs
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert not host.get("CapAdd")
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["Memory"] == 128 * 1024 * 1024
    assert host["MemorySwap"] == 128 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 64
    assert host["NetworkMode"] not in ("host", "bridge", "default")
    assert list(attrs["NetworkSettings"]["Networks"]) == [spec.network]
    assert host["RestartPolicy"]["Name"] == "on-failure"
    assert host["Init"] is True
    # one mount: the node's own volume at /data; never the Docker socket
    assert [(m["Type"], m["Name"], m["Destination"]) for m in attrs["Mounts"]] == [("volume", spec.volume, "/data")]
    assert host["Binds"] == [f"{spec.volume}:/data:rw"]
    assert "docker.sock" not in str(attrs["Mounts"]) + str(host["Binds"])
    # published on the region host only
    assert host["PortBindings"] == {"7000/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    published = {port: b for port, b in attrs["NetworkSettings"]["Ports"].items() if b}
    assert list(published) == ["7000/tcp"]  # an EXPOSEd image port stays unpublished
    assert all(b["HostIp"] == "127.0.0.1" for b in published["7000/tcp"])

    # the kernel agrees (only checkable when the engine shares our pid namespace)
    pid = attrs["State"]["Pid"]
    proc_status = Path(f"/proc/{pid}/status")
    if proc_status.exists():
        fields = dict(line.split(":", 1) for line in proc_status.read_text().splitlines() if ":" in line)
        assert fields["Uid"].split()[0] == "10001"
        assert fields["Gid"].split()[0] == "10001"
        assert fields["NoNewPrivs"].strip() == "1"
        assert int(fields["CapEff"].strip(), 16) == 0


def test_secrets_are_files_of_the_nodes_user_never_the_environment(docker_driver, docker_client, make_spec):
    spec = make_spec()
    docker_driver.ensure_node(spec)
    wait_healthy(docker_driver.observe(spec).endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    container = docker_client.containers.get(spec.name)
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])  # what `docker inspect` shows
    for name, value in spec.secrets.items():
        assert name not in env
        assert not any(value in v for v in env.values())
        path = env[f"{name}_FILE"]
        assert path.startswith("/data/.secrets/")
        code, out = container.exec_run(["stat", "-c", "%a %u:%g", path])
        assert code == 0 and out.decode().split() == ["400", "10001:10001"], out
        code, out = container.exec_run(["cat", path])
        assert code == 0 and out.decode() == value
    code, out = container.exec_run(["stat", "-c", "%a %u", "/data/.secrets"])
    assert out.decode().split() == ["700", "10001"], out
    code, out = container.exec_run(["sh", "-c", "cat /proc/1/environ /proc/self/environ | tr '\\0' '\\n'"])
    assert not any(value in out.decode() for value in spec.secrets.values())

    # A restart (new generation: a new container) writes them again over the kept volume.
    again = replace(spec, labels={**spec.labels, "io.bsn.generation": "2"})
    wait_healthy(docker_driver.ensure_node(again).endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))


def test_ensure_twice_adopts_the_same_objects(docker_driver, docker_client, make_spec, installation_id):
    spec = make_spec()
    first = docker_driver.ensure_node(spec)
    second = docker_driver.ensure_node(spec)
    assert second.runtime_id == first.runtime_id
    assert second.endpoint == first.endpoint
    containers, volumes, networks = labelled(docker_client, installation_id)
    assert [c.name for c in containers] == [spec.name]
    assert [v.name for v in volumes] == [spec.volume]
    assert [n.name for n in networks] == [spec.network]


def test_concurrent_ensures_converge_on_one_node(docker_driver, docker_client, make_spec, installation_id):
    spec = make_spec()
    results, errors = [], []
    barrier = threading.Barrier(4)

    def worker():
        barrier.wait()
        try:
            results.append(DockerDriver(docker_driver.base_url, 30).ensure_node(spec))
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # A loser may see a transient conflict (a second look resolves it); nothing else.
    assert all(isinstance(e, TransientRuntimeError) for e in errors), errors
    final = docker_driver.ensure_node(spec)
    assert {r.runtime_id for r in results} <= {final.runtime_id}
    containers, volumes, networks = labelled(docker_client, installation_id)
    assert len(containers) == 1 and len(volumes) == 1 and len(networks) == 1


def test_crashed_node_is_restarted_by_the_engine(docker_driver, docker_client, make_spec):
    spec = make_spec()
    docker_driver.ensure_node(spec)
    pid = docker_client.containers.get(spec.name).attrs["State"]["Pid"]
    if not Path(f"/proc/{pid}").exists():
        pytest.skip("engine runs in another pid namespace")
    os.kill(pid, signal.SIGKILL)  # a crash, not a stop: the on-failure policy applies
    container = docker_client.containers.get(spec.name)
    wait_for(lambda: container.reload() or container.attrs["RestartCount"] >= 1)
    status = wait_for(lambda: (s := docker_driver.observe(spec)).state == "running" and s.endpoint and s)
    wait_healthy(status.endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))


def test_remove_network_only_when_unused(docker_driver, docker_client, make_spec):
    spec = make_spec()
    docker_driver.ensure_node(spec)
    docker_driver.remove_network(spec)  # still in use: kept, no error
    assert [n.name for n in docker_client.networks.list(names=[spec.network])] == [spec.network]

    docker_driver.remove_node(spec, keep_data=False)
    docker_driver.remove_network(spec)
    assert not [n for n in docker_client.networks.list(names=[spec.network]) if n.name == spec.network]
    docker_driver.remove_network(spec)  # idempotent


def test_internal_peer_network_keeps_published_ports_and_goes_when_unused(
    docker_driver, docker_client, make_spec, installation_id
):
    a, b = make_spec(), make_spec()
    name = f"bsn-test-{uuid.uuid4().hex[:8]}-peers"
    for spec in (a, b):
        docker_driver.ensure_node(spec)
        docker_driver.ensure_internal_network(name, a.app_labels)  # idempotent
        docker_driver.connect_to_network(spec.name, name, installation_id=installation_id)
    network = docker_client.networks.get(name)
    assert network.attrs["Internal"] is True and network.attrs["Labels"]["io.bsn.role"] == "peers"
    for spec in (a, b):  # the node's own network keeps the route its published port answers through
        wait_healthy(docker_driver.observe(spec).endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    container = docker_client.containers.get(a.name)
    code, out = container.exec_run(
        ["python3", "-c", f"import urllib.request as u; print(u.urlopen('http://{b.name}:{b.port}/health').status)"]
    )
    assert code == 0 and out.strip() == b"200", out  # by container name over the peer network
    assert name not in docker_driver.owned_networks(installation_id=installation_id)  # not for ordering members

    assert docker_driver.remove_unused_network(name, installation_id=installation_id) is False  # still used
    assert docker_driver.disconnect_from_network(b.name, name, installation_id=installation_id) is True
    assert docker_driver.disconnect_from_network(b.name, name, installation_id=installation_id) is False
    for spec in (a, b):
        docker_driver.remove_node(spec, keep_data=False)
    assert docker_driver.remove_unused_network(name, installation_id=installation_id) is True
    assert not [n for n in docker_client.networks.list(names=[name]) if n.name == name]


def test_internal_network_refuses_a_same_named_foreign_or_routable_network(docker_driver, docker_client, make_spec):
    spec = make_spec()
    name = f"bsn-test-{uuid.uuid4().hex[:8]}-peers"
    routable = docker_client.networks.create(name, labels=dict(spec.app_labels))
    try:
        with pytest.raises(PermanentRuntimeError, match="not internal"):
            docker_driver.ensure_internal_network(name, spec.app_labels)
    finally:
        routable.remove()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_explicit_host_port_survives_restarts(docker_driver, docker_client, make_spec):
    port = _free_port()
    spec = replace(make_spec(), host_port=port)
    status = docker_driver.ensure_node(spec)
    assert status.endpoint == f"http://127.0.0.1:{port}"
    assert port in docker_driver.published_ports()  # what allocation skips for other owners
    docker_client.containers.get(spec.name).restart(timeout=0)
    assert docker_driver.observe(spec).endpoint == f"http://127.0.0.1:{port}"
    wait_healthy(f"http://127.0.0.1:{port}", spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))


def test_a_host_port_held_by_someone_else_is_reported_and_nothing_is_left(docker_driver, docker_client, make_spec):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        spec = replace(make_spec(), host_port=port)
        with pytest.raises(PortInUse) as caught:
            docker_driver.ensure_node(spec)
    assert caught.value.port == port
    assert docker_driver.observe(spec).state == "missing"  # the unstartable container was removed


def test_foreign_objects_are_refused_and_left_alone(docker_driver, docker_client, make_spec, foreign_objects):
    # a network with our name but without our labels
    spec = make_spec()
    foreign_net = docker_client.networks.create(spec.network, driver="bridge")
    foreign_objects.append(foreign_net)
    with pytest.raises(PermanentRuntimeError, match="not owned"):
        docker_driver.ensure_node(spec)
    docker_driver.remove_network(spec)
    foreign_net.reload()  # untouched

    # a container with our name but another installation's labels
    spec2 = make_spec()
    foreign_labels = {**spec2.labels, LABEL_INSTALLATION: uuid.uuid4().hex}
    foreign = docker_client.containers.create(spec2.image, name=spec2.name, labels=foreign_labels)
    foreign_objects.append(foreign)
    with pytest.raises(PermanentRuntimeError, match="not owned"):
        docker_driver.ensure_node(spec2)
    with pytest.raises(PermanentRuntimeError):
        docker_driver.stop_node(spec2)
    with pytest.raises(PermanentRuntimeError):
        docker_driver.remove_node(spec2, keep_data=False)
    assert docker_driver.observe(spec2).state == "missing"
    foreign.reload()
    assert foreign.status == "created"

    # a volume with our name but no labels
    spec3 = make_spec()
    foreign_vol = docker_client.volumes.create(spec3.volume)
    foreign_objects.append(foreign_vol)
    with pytest.raises(PermanentRuntimeError, match="not owned"):
        docker_driver.ensure_node(spec3)
    docker_driver.remove_node(spec3, keep_data=False)
    foreign_vol.reload()


def test_missing_image_is_permanent_and_says_how_to_build(docker_driver, make_spec):
    spec = make_spec(image=f"bsn-test/absent-{uuid.uuid4().hex[:8]}:never")
    with pytest.raises(PermanentRuntimeError, match="bsn_images build"):
        docker_driver.ensure_node(spec)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "base_url",
    [f"unix:///tmp/bsn-no-engine-{uuid.uuid4().hex}.sock", f"tcp://127.0.0.1:{_closed_port()}"],
)
def test_unreachable_engine_is_unavailable_quickly(base_url, make_spec):
    driver = DockerDriver(base_url, timeout=30)
    started = time.monotonic()
    with pytest.raises(RuntimeUnavailable):
        driver.ping()
    with pytest.raises(RuntimeUnavailable):
        driver.ensure_node(make_spec())
    assert time.monotonic() - started < 5


class _TimingOutContainers:
    def get(self, name):
        raise requests.exceptions.ReadTimeout("Read timed out. (read timeout=30)")

    create = list = get


class _FakeClient:
    containers = _TimingOutContainers()

    class networks:  # mimics the SDK attribute
        @staticmethod
        def list(**kwargs):
            return []

        @staticmethod
        def create(**kwargs):
            raise requests.exceptions.ReadTimeout("Read timed out. (read timeout=30)")


def test_timeout_is_transient_never_success(make_spec):
    driver = DockerDriver("unix:///fake.sock", timeout=30)
    driver._clients[driver.base_url] = _FakeClient()
    spec = make_spec()
    for call in (lambda: driver.ensure_node(spec), lambda: driver.observe(spec), lambda: driver.stop_node(spec)):
        with pytest.raises(TransientRuntimeError, match="unknown") as info:
            call()
        assert not isinstance(info.value, RuntimeUnavailable)


def test_a_node_whose_start_meets_a_stale_task_is_recreated_on_its_volume(
    docker_driver, docker_client, make_spec, monkeypatch
):
    """An engine stopped while a start was under way keeps containerd's task of that
    container: after the engine's restart every start answers 500 "task <id>: already
    exists" (seen in the three-engine outage test). The driver makes the container anew
    (a new id) on the same volume instead of reporting a temporary error forever."""
    import docker.errors
    from docker.models.containers import Container

    spec = replace(make_spec(), host_port=_free_port())
    docker_driver.ensure_node(spec)
    docker_driver.stop_node(spec)
    stale = docker_client.containers.get(spec.name)
    volumes_before = {m["Name"] for m in stale.attrs["Mounts"] if m.get("Name")}
    real_start = Container.start

    def start(self, **kwargs):  # the engine's answer for the stale id only
        if self.id == stale.id:
            raise docker.errors.APIError(
                "500 Server Error", explanation=f"task {self.id}: already exists", response=_Response(500)
            )
        return real_start(self, **kwargs)

    monkeypatch.setattr(Container, "start", start)
    status = docker_driver.ensure_node(spec)
    assert status.state == "running" and status.runtime_id != stale.id
    again = docker_client.containers.get(spec.name)
    assert {m["Name"] for m in again.attrs["Mounts"] if m.get("Name")} == volumes_before
    wait_healthy(docker_driver.observe(spec).endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))


class _Response:
    def __init__(self, status_code: int):
        self.status_code, self.reason, self.url = status_code, "Server Error", "http://engine/containers/start"


def test_a_stopped_node_whose_network_the_engine_lost_is_recreated_on_its_volume(
    docker_driver, docker_client, make_spec
):
    """After an engine restart (or an operator's clean-up) a stopped container can name a
    network the engine no longer has: starting it fails at every try. The driver recreates
    such a container (same name and generation, same data volume) instead of failing forever."""
    spec = replace(make_spec(), host_port=_free_port())
    docker_driver.ensure_node(spec)
    wait_healthy(docker_driver.observe(spec).endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    docker_driver.stop_node(spec)
    container = docker_client.containers.get(spec.name)
    (network_name,) = container.attrs["NetworkSettings"]["Networks"]
    docker_client.networks.get(network_name).remove()  # a stopped container holds no endpoint
    # The container now names nothing it can start on; the next ensure makes the network
    # again and the container anew on the same volume.
    volumes_before = {m["Name"] for m in container.attrs["Mounts"] if m.get("Name")}
    status, errors = None, []
    for _ in range(3):  # a first try may answer "look again" (transient) after recreating
        try:
            status = docker_driver.ensure_node(spec)
            break
        except TransientRuntimeError as exc:
            errors.append(str(exc))
    assert status is not None and status.state == "running", errors
    wait_healthy(docker_driver.observe(spec).endpoint, spec.health_path, HEALTH_TIMEOUT, auth=auth_of(spec))
    again = docker_client.containers.get(spec.name)
    assert {m["Name"] for m in again.attrs["Mounts"] if m.get("Name")} == volumes_before

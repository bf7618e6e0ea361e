"""A swarm of several hosts on one machine, for the tests: each host a ``dockerd`` in a
network namespace of its own, the namespaces joined by a bridge the test makes.

Two swarm engines cannot share one network namespace: both would listen on 2377 and 7946
and both want UDP 4789 for their overlay traffic (VXLAN), so the one-host swarm of
tests/conftest.py (``swarm_engine``) cannot grow a second host there. Here every host has
its own namespace (``ip netns``), hence its own ports, loopback and routes, and an address
on the bridge ``bsnmh0`` (10.213.0.0/24, made and removed by the test; the control plane
reaches published ports there as it would another machine's). The namespaces have no
default route: nothing in them reaches past the bridge (no registry, no other address).

The daemons are entered with ``nsenter --net`` only (``ip netns exec`` would remount /sys
and hide the cgroup hierarchy dockerd needs). Each has its own data and exec root under a
directory made for this run; the ledger image is not loaded: the swarm driver loads it
onto each host through the host's engine socket (the ``io.bsn.engine-url`` label).

This machine's kernel has no ESP (``CONFIG_INET_ESP`` unset), so an *encrypted* overlay
drops every packet between hosts here (dockerd logs "Failed Adding ... function not
implemented"): regions on this swarm are registered with ``overlay_encryption=False``,
as an operator with a private host network, or such a kernel, registers them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker

from apps.runtime.docker import engine_client

BRIDGE = "bsnmh0"
SUBNET = "10.213.0"  # .1 the machine's side of the bridge, .11, .12, ... the hosts
SWARM_POOL = "10.215.0.0/16"  # the overlay networks of this swarm
STATE = Path("/var/lib/bsn-test-multihost")
MAX_HOSTS = 4


@dataclass
class Host:
    index: int
    netns: str
    address: str
    run: Path
    root: Path
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"unix://{self.run / 'docker.sock'}"

    def client(self) -> docker.DockerClient:
        return engine_client(self.base_url, timeout=60)

    def answers(self) -> bool:
        from tests.engines import answers

        return answers(self.client)


def available() -> str:
    """Why the harness cannot run here ("" when it can): it needs root, ``ip`` and ``nsenter``."""
    if os.geteuid() != 0:
        return "root (network namespaces)"
    missing = [tool for tool in ("ip", "nsenter", "dockerd") if shutil.which(tool) is None]
    return f"the tools {', '.join(missing)}" if missing else ""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _kill_pidfile(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def tear_down(hosts_or_count: list[Host] | int = MAX_HOSTS) -> None:
    """Stop the hosts' daemons, remove their namespaces, the bridge and their data. Also
    what an interrupted run left (by name), so it is safe at the start as at the end."""
    count = hosts_or_count if isinstance(hosts_or_count, int) else MAX_HOSTS
    for i in range(1, count + 1):
        _kill_pidfile(Path(f"/run/bsn-mh{i}/docker.pid"))
    for i in range(1, count + 1):
        _ip("netns", "del", f"bsnmh{i}", check=False)
    _ip("link", "del", BRIDGE, check=False)
    if STATE.exists():
        for run_dir in STATE.iterdir():
            subprocess.run(["umount", "-R", "-l", str(run_dir)], capture_output=True)
            shutil.rmtree(run_dir, ignore_errors=True)


def start_hosts(count: int, timeout: float = 60) -> list[Host]:
    """``count`` hosts (2..MAX_HOSTS), each a dockerd in its own namespace on the bridge,
    not yet in a swarm."""
    from tests.engines import allow_inside

    assert 1 <= count <= MAX_HOSTS
    tear_down()
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    allow_inside(f"{SUBNET}.0/24")  # the machine's FORWARD policy drops bridged traffic otherwise
    run_root = STATE / uuid.uuid4().hex[:8]
    hosts = []
    for i in range(1, count + 1):
        netns, address = f"bsnmh{i}", f"{SUBNET}.{10 + i}"
        _ip("netns", "add", netns)
        _ip("link", "add", f"bsnmh-v{i}", "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", f"bsnmh-v{i}", "master", BRIDGE, "up")
        for args in (
            ("addr", "add", f"{address}/24", "dev", "eth0"),
            ("link", "set", "eth0", "up"),
            ("link", "set", "lo", "up"),
        ):
            _ip("-n", netns, *args)
        host = Host(index=i, netns=netns, address=address, run=Path(f"/run/bsn-mh{i}"), root=run_root / f"h{i}")
        host.run.mkdir(parents=True, exist_ok=True)
        host.root.mkdir(parents=True, exist_ok=True)
        argv = [
            "nsenter", f"--net=/run/netns/{netns}",
            shutil.which("dockerd") or "dockerd",
            f"--data-root={host.root / 'data'}",
            f"--exec-root={host.run / 'exec'}",
            f"--pidfile={host.run / 'docker.pid'}",
            f"--host={host.base_url}",
            "--bridge=none",  # no docker0 in a namespace of its own; services use the overlay
            f"--default-address-pool=base=10.214.{16 * i}.0/20,size=24",
        ]  # fmt: skip
        log = open(host.root / "dockerd.log", "ab")
        host.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        hosts.append(host)
    deadline = time.monotonic() + timeout
    for host in hosts:
        while not host.answers():
            if host.process.poll() is not None or time.monotonic() > deadline:
                tail = (host.root / "dockerd.log").read_text(errors="replace")[-2000:]
                tear_down()
                raise RuntimeError(f"host {host.index}'s dockerd did not start:\n{tail}")
            time.sleep(0.2)
    return hosts


def swarm_up(hosts: list[Host]) -> docker.DockerClient:
    """The first host inits the swarm (manager), the others join it as workers; every
    host is labelled with where its published ports are reached and its engine's socket.
    The manager's client."""
    from apps.runtime.swarm import NODE_LABEL_ENGINE_URL, NODE_LABEL_PUBLISH_HOST

    manager = hosts[0].client()
    manager.swarm.init(
        advertise_addr=hosts[0].address,
        listen_addr=f"{hosts[0].address}:2377",
        default_addr_pool=[SWARM_POOL],
        subnet_size=24,
    )
    token = manager.swarm.attrs["JoinTokens"]["Worker"]
    for host in hosts[1:]:
        client = host.client()
        try:
            client.swarm.join(
                remote_addrs=[f"{hosts[0].address}:2377"],
                join_token=token,
                listen_addr=f"{host.address}:2377",
                advertise_addr=host.address,
            )
        finally:
            client.close()
    deadline = time.monotonic() + 60
    while len([n for n in manager.api.nodes() if (n.get("Status") or {}).get("State") == "ready"]) < len(hosts):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(manager.api.nodes())} of {len(hosts)} hosts joined the swarm")
        time.sleep(0.3)
    by_address = {host.address: host for host in hosts}
    for node in manager.api.nodes():
        host = by_address[node["Status"]["Addr"]]
        label_node(manager, node["ID"], {NODE_LABEL_PUBLISH_HOST: host.address, NODE_LABEL_ENGINE_URL: host.base_url})
    return manager


def label_node(manager: docker.DockerClient, node_id: str, labels: dict[str, str], **spec_fields) -> None:
    """Add ``labels`` to a host of the swarm (and set other fields of its spec, e.g.
    ``Availability="drain"``)."""
    node = manager.api.inspect_node(node_id)
    spec = dict(node["Spec"])
    spec["Labels"] = {**(spec.get("Labels") or {}), **labels}
    spec.update(spec_fields)
    manager.api.update_node(node_id, node["Version"]["Index"], spec)


def node_of(manager: docker.DockerClient, address: str) -> str:
    """The swarm node id of the host at ``address``."""
    return next(n["ID"] for n in manager.api.nodes() if n["Status"]["Addr"] == address)

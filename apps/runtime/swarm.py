"""Docker Swarm driver: a region is a swarm; each ledger node is a service with one replica.

The same split as ``docker.py``:

- pure builders (``service_create_kwargs``, ``secret_name``, ``overlay_create_kwargs``,
  ``status_from_service``, ``placement_constraints``, ``healthcheck``) -- unit tested
  without an engine (tests/runtime/test_swarm_spec.py);
- ``SwarmDriver`` -- the thin part that sends them to the swarm manager through the Docker
  SDK's low-level API and classifies what comes back (``docker.classify_error``).

What Swarm does for us, and we therefore never do beside it (no second container next to
a service): it places the task on a host of the region (node label
``io.bsn.region.<code>=true``), restarts a dead task (restart policy ``on-failure``), rolls
a new generation one task at a time gated by the container's health check, rolling back
on failure, and keeps the node's secrets (Swarm secrets, mounted as files under
/run/secrets, never environment variables).

Secrets are immutable in Swarm, so each is named by a digest of (node, name, value): a new
value (a rotated credential) is a new secret, the service is updated to it, and the old
one is removed once no service uses it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import docker
import docker.errors

from apps.runtime import image_sync
from apps.runtime.base import (
    HostUnavailable,
    PermanentRuntimeError,
    PlatformServices,
    PortInUse,
    PublishedPorts,
    RolledBack,
    RollingUpdates,
    RuntimeError_,
    TransientRuntimeError,
)
from apps.runtime.docker import EngineClients, format_endpoint, owned_by, volume_labels
from apps.runtime.spec import (
    LABEL_APP,
    LABEL_GENERATION,
    LABEL_INSTALLATION,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_ROLE,
    NODE_DATA_PATH,
    NodeSpec,
    NodeStatus,
    secret_env,
    secret_file_name,
)

logger = logging.getLogger(__name__)

SECRETS_PATH = "/run/secrets"  # where Swarm mounts a task's secrets (a tmpfs of its own)
LABEL_SECRET = "io.bsn.secret"  # noqa: S105 - a label key, not a password; which of the node's secrets a Swarm secret holds
# Node labels an operator (or the test harness) puts on the swarm's hosts.
NODE_LABEL_REGION = "io.bsn.region.{code}"  # "true": this host runs nodes of region <code>
NODE_LABEL_PUBLISH_HOST = "io.bsn.publish-host"  # where this host's published ports are reached
NODE_LABEL_ENGINE_URL = "io.bsn.engine-url"  # this host's own engine (to load the image there)
NODE_LABEL_IMAGE = "io.bsn.image.{short}"  # "true": the driver loaded image <short id> here

NS = 1_000_000_000
STOP_GRACE_NS = 10 * NS  # SIGTERM → SIGKILL, as the Docker driver's STOP_TIMEOUT
# Bounded restarts by Swarm itself, as the Docker driver's restart policy: beyond that the
# reconciler decides (ensure_node forces a new task), never an endless crash loop.
RESTART_POLICY = {"Condition": "on-failure", "Delay": 1 * NS, "MaxAttempts": 3, "Window": 60 * NS}
# One task at a time (a node is one replica; stop-first, since the new task needs the same
# host port and volume), gated by the health check, rolled back when it fails.
UPDATE_CONFIG = {
    "Parallelism": 1,
    "Delay": 0,
    "FailureAction": "rollback",
    "Monitor": 5 * NS,
    "MaxFailureRatio": 0.0,
    "Order": "stop-first",
}
ROLLBACK_CONFIG = {"Parallelism": 1, "Delay": 0, "FailureAction": "pause", "Monitor": 5 * NS, "Order": "stop-first"}
LOG_DRIVER = {"Name": "json-file", "Options": {"max-size": "10m", "max-file": "3"}}

# Task states (docker/api/types/swarm/task.go) as NodeStatus states.
# "running" once the container's health check passed; "starting" covers both a container
# being started (which may still fail, e.g. on its port) and one whose health is pending:
# the manager cannot tell them apart (no PID, no port status yet), the task's host can.
_TASK_STARTED = {"running"}
_TASK_ON_ITS_WAY = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
_TASK_ENDED = {"complete", "shutdown", "failed", "rejected", "remove", "orphaned"}


# --------------------------------------------------------------------------- builders


def short_digest(*parts: str, length: int = 20) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def secret_name(spec: NodeSpec, name: str, value: str) -> str:
    """Swarm secret names are at most 64 characters and immutable: the node's name would not
    fit with a digest, so the name is a digest of node, secret name and value (a new value
    is a new secret). Found again by its labels, never by parsing the name."""
    return f"bsn-s-{short_digest(spec.name, name, value, length=40)}"


def secret_labels(spec: NodeSpec, name: str) -> dict[str, str]:
    return {**spec.app_labels, LABEL_NODE: spec.labels[LABEL_NODE], LABEL_SECRET: name}


def overlay_create_kwargs(spec: NodeSpec, *, encrypted: bool = True) -> dict[str, Any]:
    """The app's overlay network in this region (or a platform service's): encrypted
    (IPsec between hosts) unless the region says its hosts' network is private, not
    attachable (only the app's services join it)."""
    return {
        "name": spec.network,
        "driver": "overlay",
        "options": {"encrypted": ""} if encrypted else {},
        "labels": dict(spec.app_labels),
        "check_duplicate": True,
        "attachable": False,
        "scope": "swarm",
    }


def placement_constraints(region_code: str, image_short: str | None) -> list[str]:
    """The region's hosts only, and only those that hold the image (by content)."""
    constraints = [f"node.labels.{NODE_LABEL_REGION.format(code=region_code)}==true"]
    if image_short:
        constraints.append(f"node.labels.{NODE_LABEL_IMAGE.format(short=image_short)}==true")
    return constraints


def healthcheck(spec: NodeSpec, interval_s: int = 10) -> dict[str, Any]:
    """What gates a rolling update (and when Swarm calls a task running): the node answers
    ``GET /health`` (the unauthenticated form, status only) from inside its container. The
    image has Python and nothing like curl: a raw socket with ``-S`` (no site import) costs
    about 60 ms of CPU and 10 MB, where urllib cost 100 ms and 20 MB. Docker runs the first
    check one interval after the start (``StartInterval`` needs API 1.44), so the interval
    is the operator's trade between CPU and how fast an update moves on."""
    request = f"GET {spec.health_path} HTTP/1.0" + "\\r\\n" * 2  # escaped: the probe's own literal
    probe = (
        f"import socket,sys;s=socket.create_connection(('127.0.0.1',{spec.port}),2);"
        f"s.sendall(b'{request}');sys.exit(0 if b' 200 ' in s.recv(32) else 1)"
    )
    return {
        "Test": ["CMD", "python3", "-S", "-c", probe],
        "Interval": interval_s * NS,
        "Timeout": 3 * NS,
        "Retries": 3,
        "StartPeriod": 20 * NS,
    }


def service_create_kwargs(
    spec: NodeSpec,
    *,
    network_id: str,
    secrets: dict[str, tuple[str, str]],
    constraints: list[str],
    image: str,
    replicas: int = 1,
    publish_mode: str = "host",
    health_interval: int = 10,
    force_update: int = 0,
    no_new_privileges: bool = False,
    platform: bool = False,
) -> dict[str, Any]:
    """Keyword arguments of ``APIClient.create_service`` / ``update_service``: the whole
    hardening lives here, as in ``docker.container_create_kwargs``.

    ``secrets``: ``{NAME: (secret id, secret name)}``; each becomes a file
    ``/run/secrets/<name>`` owned by the node's user, mode 0400; the environment only names
    it (``NAME_FILE``). ``image``: the image by content (its id), as loaded on the hosts.
    ``no_new_privileges``: only API ≥ 1.46 can say it per service; older swarms take it
    from the hosts' daemon configuration (docs/runtime-drivers.md).
    ``platform``: a platform service (an ordering member, ``SwarmDriver.ensure_service``):
    no health check (an etcd member without quorum answers 503 to /health, and Swarm
    killing it then would only deepen the outage), DNS round robin (its name resolves to
    the task's own address, which etcd binds its peer port to; a VIP cannot be bound), and
    its ports published in host mode whatever ``publish_mode`` says (the routing mesh
    needs a VIP).
    """
    uid, gid = spec.user.split(":")
    container: dict[str, Any] = {
        "Image": image,
        "Labels": dict(spec.labels),
        "Env": [f"{k}={v}" for k, v in sorted({**spec.env, **secret_env(spec, SECRETS_PATH)}.items())],
        "User": spec.user,
        "ReadOnly": spec.read_only,
        "Init": True,
        "CapabilityDrop": ["ALL"],
        "StopSignal": "SIGTERM",
        "StopGracePeriod": STOP_GRACE_NS,
        "Healthcheck": {"Test": ["NONE"]} if platform else healthcheck(spec, health_interval),
        "Mounts": [
            {
                "Type": "volume",
                "Source": spec.volume,
                "Target": NODE_DATA_PATH,
                "VolumeOptions": {"Labels": volume_labels(spec), "DriverConfig": {"Name": "local"}},
            },
            *[
                # Docker mounts tmpfs noexec,nosuid,nodev by default.
                {"Type": "tmpfs", "Target": target, "TmpfsOptions": {"SizeBytes": _tmpfs_size(options)}}
                for target, options in sorted(spec.tmpfs.items())
            ],
        ],
        "Secrets": [
            {
                "SecretID": secret_id,
                "SecretName": name,
                "File": {"Name": secret_file_name(key), "UID": uid, "GID": gid, "Mode": 0o400},
            }
            for key, (secret_id, name) in sorted(secrets.items())
        ],
    }
    if spec.command:
        container["Args"] = list(spec.command)
    if no_new_privileges:
        container["Privileges"] = {"NoNewPrivileges": True}
    task_template = {
        "ContainerSpec": container,
        "Resources": {
            "Limits": {
                "MemoryBytes": spec.mem_limit_mb * 1024 * 1024,
                "NanoCPUs": int(spec.cpus * 1e9),
                "Pids": spec.pids_limit,
            }
        },
        "RestartPolicy": dict(RESTART_POLICY),
        "Placement": {"Constraints": list(constraints), "Preferences": [{"Spread": {"SpreadDescriptor": "node.id"}}]},
        "LogDriver": dict(LOG_DRIVER),
        "Networks": [{"Target": network_id, "Aliases": [spec.name]}],
        "ForceUpdate": force_update,
    }
    ports = [(spec.port, spec.host_port), *spec.extra_ports]
    return {
        "name": spec.name,
        "labels": dict(spec.labels),
        "task_template": task_template,
        "mode": {"Replicated": {"Replicas": replicas}},
        "update_config": dict(UPDATE_CONFIG),
        "rollback_config": dict(ROLLBACK_CONFIG),
        "endpoint_spec": {
            "Mode": "dnsrr" if platform else "vip",
            "Ports": [
                {
                    "Protocol": "tcp",
                    "TargetPort": inner,
                    "PublishMode": "host" if platform else publish_mode,
                    **({"PublishedPort": outer} if outer else {}),
                }
                for inner, outer in ports
            ],
        },
    }


def pinned_host(service: dict[str, Any] | None) -> str | None:
    """The swarm node a platform service is pinned to (its ``node.id==`` constraint)."""
    task = ((service or {}).get("Spec") or {}).get("TaskTemplate") or {}
    for constraint in (task.get("Placement") or {}).get("Constraints") or []:
        key, _, value = constraint.replace(" ", "").partition("==")
        if key == "node.id" and value:
            return value
    return None


def host_away(node_id: str | None, nodes: list[dict[str, Any]]) -> str:
    """Why the swarm host ``node_id`` takes no task now ("is drained", "is down", "left the
    swarm"), or "" when it does (or no host is named)."""
    if not node_id:
        return ""
    node = next((n for n in nodes if n.get("ID") == node_id), None)
    if node is None:
        return f"({node_id[:12]}) left the swarm"
    name = f"{_hostname(node)} ({node_id[:12]})"
    availability = (node.get("Spec") or {}).get("Availability") or "active"
    if availability != "active":
        return f"{name} is {'drained' if availability == 'drain' else availability + 'd'}"
    state = (node.get("Status") or {}).get("State") or "unknown"
    return "" if state == "ready" else f"{name} is {state}"


def choose_host(candidates: list[str], pinned: list[str], volume_hosts: set[str]) -> str | None:
    """Where a new platform service goes: the host that holds its volume already (a member
    whose service was removed finds its data again), else the candidate that runs the
    fewest of the installation's platform services (``pinned``: their hosts), ties broken
    by the order of ``candidates`` -- so three members on three hosts go one to each, and
    losing a host loses one member. None when there is no candidate."""
    for host in candidates:
        if host in volume_hosts:
            return host
    if not candidates:
        return None
    return min(candidates, key=lambda host: (pinned.count(host), candidates.index(host)))


def _tmpfs_size(options: str) -> int:
    for part in options.split(","):
        if part.startswith("size="):
            value = part[5:].lower()
            factor = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(value[-1:], 1)
            return int(value.rstrip("kmg")) * factor
    return 16 * 1024 * 1024


def service_replicas(service: dict[str, Any]) -> int:
    return int((((service.get("Spec") or {}).get("Mode") or {}).get("Replicated") or {}).get("Replicas") or 0)


def current_task(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The task Swarm means to run now (desired state running), newest first; else the newest task."""
    if not tasks:
        return None
    ordered = sorted(tasks, key=lambda t: (t.get("Version") or {}).get("Index", 0), reverse=True)
    wanted = [t for t in ordered if t.get("DesiredState") == "running"]
    return (wanted or ordered)[0]


def status_from_service(service: dict[str, Any], tasks: list[dict[str, Any]], hosts: dict[str, str]) -> NodeStatus:
    """A node's status from its service, the service's tasks and ``{swarm node id: host}``.

    running: a task's container runs (its health may still be pending: the control plane
    verifies the node itself); stopped: no replica wanted, or Swarm gave up restarting
    (restart policy exhausted); unknown: a task is on its way (scheduled, starting again
    after a crash). The endpoint is the task's host (``hosts``) and its published port;
    runtime_id the task's container (a new one after every restart or update).
    """
    spec = service.get("Spec") or {}
    labels = dict(
        ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Labels") or spec.get("Labels") or {}
    )
    name = spec.get("Name", "")
    task = current_task(tasks)
    if service_replicas(service) == 0:
        live = task is not None and task.get("DesiredState") == "running" and _task_state(task) in _TASK_STARTED
        if not live:
            return NodeStatus(name=name, state="stopped", runtime_id=service.get("ID"), labels=labels)
    if task is None or task.get("DesiredState") != "running":
        state = "stopped" if task is not None else "unknown"
        return NodeStatus(name=name, state=state, runtime_id=service.get("ID"), labels=labels)
    current = _task_state(task)
    if current not in _TASK_STARTED:
        state = "unknown" if current in _TASK_ON_ITS_WAY else "stopped"
        return NodeStatus(name=name, state=state, runtime_id=service.get("ID"), labels=labels)
    endpoint = task_endpoint(task, hosts) or mesh_endpoint(service, task, hosts)
    if not endpoint:  # started, its port not reported yet: not reachable, so not running yet
        return NodeStatus(name=name, state="unknown", runtime_id=service.get("ID"), labels=labels)
    container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID") or task.get("ID")
    task_labels = dict(((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or labels)
    return NodeStatus(
        name=name,
        state="running",
        runtime_id=container,
        endpoint=endpoint,
        labels=task_labels,
    )


def _task_state(task: dict[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State") or "")


def task_endpoint(task: dict[str, Any], hosts: dict[str, str]) -> str | None:
    """``http://<task's host>:<published port>`` of a task's first published TCP port."""
    host = hosts.get(task.get("NodeID") or "")
    ports = ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []
    published = [p for p in ports if p.get("Protocol", "tcp") == "tcp" and p.get("PublishedPort")]
    if not host or not published:
        return None
    return format_endpoint(host, published[0]["PublishedPort"])


def mesh_endpoint(service: dict[str, Any], task: dict[str, Any], hosts: dict[str, str]) -> str | None:
    """A port published on the routing mesh (``ingress``) answers on every host of the
    swarm: the task's own host is as good as any."""
    host = hosts.get(task.get("NodeID") or "")
    ports = (service.get("Endpoint") or {}).get("Ports") or []
    mesh = [p for p in ports if p.get("PublishMode", "ingress") == "ingress" and p.get("PublishedPort")]
    if not host or not mesh:
        return None
    return format_endpoint(host, mesh[0]["PublishedPort"])


def sticky_endpoint(service: dict[str, Any], task: dict[str, Any], hosts: dict[str, str]) -> str | None:
    """A task's host-mode port before Swarm reports it (it does once the health check
    passed): the port the service asks for, which a running container has bound."""
    host = hosts.get(task.get("NodeID") or "")
    ports = ((service.get("Spec") or {}).get("EndpointSpec") or {}).get("Ports") or []
    sticky = [p for p in ports if p.get("PublishMode") == "host" and p.get("PublishedPort")]
    if not host or not sticky:
        return None
    return format_endpoint(host, sticky[0]["PublishedPort"])


def node_host(node: dict[str, Any]) -> str:
    """Where a swarm host's published ports are reached: its ``io.bsn.publish-host`` label,
    else the address it joined the swarm with."""
    labels = (node.get("Spec") or {}).get("Labels") or {}
    return labels.get(NODE_LABEL_PUBLISH_HOST) or str((node.get("Status") or {}).get("Addr") or "")


def _hostname(node: dict[str, Any]) -> str:
    return str(((node.get("Description") or {}).get("Hostname")) or "")


def task_problem(task: dict[str, Any] | None) -> str:
    if task is None:
        return ""
    status = task.get("Status") or {}
    return str(status.get("Err") or status.get("Message") or "")


def port_conflict(text: str) -> bool:
    text = text.lower()
    return (
        "port is already allocated" in text
        or "address already in use" in text
        or ("host-mode port" in text and "in use" in text)
    )


# --------------------------------------------------------------------------- driver


class SwarmDriver(EngineClients):
    """Executes node specs as services on a Docker Swarm (through one manager's API)."""

    CAPABILITIES = (PlatformServices, PublishedPorts, RollingUpdates)
    name = "swarm"

    START_TIMEOUT = 90.0  # seconds for a task to start (image on the host, scheduling)
    STOP_TIMEOUT = 30.0
    UPDATE_TIMEOUT = 180.0  # a rolling update: stop, start, health check, monitor
    START_POLL = 0.03  # seconds between looks at a starting task (a look is one ~4 ms call)
    MANAGER_ID_TTL = 30.0

    def __init__(
        self,
        base_url: str,
        timeout: int,
        *,
        region_code: str,
        tls: docker.tls.TLSConfig | None = None,
        image_source_url: str | None = None,
        publish_mode: str = "host",
        health_interval: int = 10,
        overlay_encryption: bool = True,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.region_code = region_code
        self.tls = tls
        self.image_source_url = image_source_url
        self.publish_mode = publish_mode
        self.health_interval = health_interval
        self.overlay_encryption = overlay_encryption
        self._clients: dict[str, docker.DockerClient] = {}
        self._lock = threading.Lock()
        self._me: tuple[float, str] | None = None  # (when asked, the manager's swarm node id)

    def __repr__(self) -> str:
        return f"SwarmDriver({self.base_url!r}, region={self.region_code!r})"

    # -- plumbing: EngineClients (apps/runtime/docker.py)

    def _manager_id(self, client) -> str:
        """The swarm node id of the engine this driver talks to, remembered for
        MANAGER_ID_TTL seconds: ``info()`` costs about 10 ms (the engine gathers all it
        reports) and a start asked it three times. The id changes only when that engine
        leaves and joins a swarm again."""
        now = time.monotonic()
        if self._me is None or now - self._me[0] > self.MANAGER_ID_TTL:
            self._me = (now, (client.info().get("Swarm") or {}).get("NodeID") or "")
        return self._me[1]

    def _api_at_least(self, version: str) -> bool:
        from docker.utils import version_gte

        return version_gte(self._client().api.api_version, version)

    # -- protocol

    def ping(self) -> None:
        client = self._client()
        with self._translate():
            client.ping()
            swarm = client.info().get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise PermanentRuntimeError(
                f"the engine at {self.base_url} is not a swarm manager (swarm state "
                f"{swarm.get('LocalNodeState')!r}); run `docker swarm init` there or give a manager's address"
            )

    def ensure_node(self, spec: NodeSpec) -> NodeStatus:
        return self._ensure(spec, platform=False)

    def ensure_service(self, spec: NodeSpec) -> NodeStatus:
        """A platform service (an ordering member): a one-replica service like a node's, on
        its own overlay network (``spec.network``), with no health check, DNS round robin and
        its ports in host mode (``service_create_kwargs(platform=True)``), pinned to one host
        (``node.id==``) because its volume is local to that host. The host is chosen once,
        when the service is made (``choose_host``): the one that holds its volume, else the
        region's host running the fewest of our platform services, so members spread over
        distinct hosts. Idempotent, as ``ensure_node``."""
        return self._ensure(spec, platform=True)

    def volume_exists(self, name: str) -> bool:
        """Whether a host the driver reaches (the manager, hosts with an engine URL label)
        holds the volume. A host it cannot reach may hold one it does not see."""
        client = self._client()
        with self._translate():
            return any(self._has_volume(engine, name) for _, engine in self._reachable_hosts(client))

    def _ensure(self, spec: NodeSpec, *, platform: bool) -> NodeStatus:
        client = self._client()
        with self._translate():
            service = self._get_service(client, spec.name)
            if service is not None:
                self._check_owner(spec, service)
            # The image first: a region that cannot run it refuses before anything is made.
            image, short = self._image_on_hosts(client, spec.image)
            network_id = self._ensure_network(client, spec)
            secrets = self._ensure_secrets(client, spec)
            constraints = placement_constraints(self.region_code, short)
            if platform or spec.pinned:
                host = pinned_host(service) or self._task_host(client, service)
                constraints.append(f"node.id=={host or self._choose_host(client, spec, short)}")
            nnp = self._api_at_least("1.46")

            def build(force_update: int = 0) -> dict[str, Any]:
                return service_create_kwargs(
                    spec,
                    network_id=network_id,
                    secrets=secrets,
                    constraints=constraints,
                    image=image,
                    publish_mode=self.publish_mode,
                    health_interval=self.health_interval,
                    force_update=force_update,
                    no_new_privileges=nnp,
                    platform=platform,
                )

            if service is None:
                try:
                    client.api.create_service(**build())
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:
                        raise
                    # A concurrent ensure created it: adopt it below.
                service = self._get_service(client, spec.name)
                if service is None:
                    raise TransientRuntimeError(f"service {spec.name} was created but cannot be read back; look again")
                self._check_owner(spec, service)
                status = self._wait_started(client, spec, service)
            else:
                status = self._converge(client, spec, service, build, secrets=secrets, image=image)
            self._drop_unused_secrets(client, spec)
            return status

    def _converge(
        self,
        client,
        spec: NodeSpec,
        service: dict[str, Any],
        build: Callable[[int], dict[str, Any]],
        *,
        secrets: dict[str, tuple[str, str]],
        image: str,
    ) -> NodeStatus:
        """An existing service: update it to the spec when it differs (a new generation or
        new secret values: a health-gated rolling update, rolled back on failure), scale it
        back to one replica when stopped, force a new task when Swarm gave up restarting."""
        current = service["Spec"]
        container = (current.get("TaskTemplate") or {}).get("ContainerSpec") or {}
        have_secrets = sorted(s.get("SecretName") for s in container.get("Secrets") or [])
        want_secrets = sorted(name for _, name in secrets.values())
        generation_differs = (current.get("Labels") or {}).get(LABEL_GENERATION) != spec.labels[LABEL_GENERATION]
        differs = generation_differs or have_secrets != want_secrets or container.get("Image") != image
        stopped = service_replicas(service) == 0
        seen = self._status(client, service)
        gave_up = not stopped and seen.state == "stopped"
        if not (differs or stopped or gave_up):
            if seen.state == "running":
                return seen
            return self._wait_started(client, spec, service)  # Swarm is bringing it up: never fight it
        force = int((current.get("TaskTemplate") or {}).get("ForceUpdate") or 0) + (1 if gave_up else 0)
        before = (service.get("UpdateStatus") or {}).get("StartedAt")
        self._update(client, service, build(force))
        if differs and not stopped:
            return self._wait_updated(client, spec, before)
        return self._wait_started(client, spec, self._get_service(client, spec.name) or service)

    def _task_host(self, client, service: dict[str, Any] | None) -> str | None:
        """The host of an existing service's current task (where its volume is), for a
        service made before it was pinned; None for a new service or one with no task."""
        if service is None:
            return None
        task = current_task(self._tasks(client, service["ID"]))
        return (task or {}).get("NodeID") or None

    def _choose_host(self, client, spec: NodeSpec, image_short: str | None) -> str:
        """The host of a new pinned service (a platform service, a solo node: ``choose_host``):
        among the region's ready hosts that hold the image, by name, the one holding its
        volume, else the one with the fewest of this installation's pinned services of the
        same role."""
        image_label = NODE_LABEL_IMAGE.format(short=image_short) if image_short else None
        candidates = [
            node["ID"]
            for node in sorted(self._region_hosts(client), key=lambda n: (_hostname(n), n["ID"]))
            if image_label is None or ((node.get("Spec") or {}).get("Labels") or {}).get(image_label) == "true"
        ]
        role = spec.app_labels.get(LABEL_ROLE) or spec.labels.get(LABEL_ROLE, "")
        others = client.api.services(
            filters={"label": [f"{LABEL_INSTALLATION}={self._installation(spec)}", f"{LABEL_ROLE}={role}"]}
        )
        pinned = [host for host in map(pinned_host, others) if host]
        volume_hosts = {
            node_id for node_id, engine in self._reachable_hosts(client) if self._has_volume(engine, spec.volume)
        }
        host = choose_host(candidates, pinned, volume_hosts)
        if host is None:
            raise PermanentRuntimeError(
                f"no ready host of region {self.region_code} holds the image for {spec.name}; see the region's hosts"
            )
        return host

    def _update(self, client, service: dict[str, Any], kwargs: dict[str, Any]) -> None:
        kwargs = dict(kwargs)
        kwargs.pop("name")
        try:
            client.api.update_service(
                service["ID"], service["Version"]["Index"], name=service["Spec"]["Name"], **kwargs
            )
        except docker.errors.APIError as exc:
            if "update out of sequence" in str(exc.explanation or exc):
                raise TransientRuntimeError(f"service {service['Spec']['Name']} changed meanwhile; look again") from exc
            raise

    def stop_node(self, spec: NodeSpec) -> NodeStatus:
        """No replica wanted: Swarm stops the task (SIGTERM, then SIGKILL after the grace)."""
        client = self._client()
        with self._translate():
            service = self._get_service(client, spec.name)
            if service is None:
                return NodeStatus(name=spec.name, state="missing")
            self._check_owner(spec, service)
            if service_replicas(service) != 0:
                spec_now = service["Spec"]
                self._update(
                    client,
                    service,
                    {
                        "name": spec_now["Name"],
                        "labels": spec_now.get("Labels"),
                        "task_template": spec_now["TaskTemplate"],
                        "mode": {"Replicated": {"Replicas": 0}},
                        "update_config": spec_now.get("UpdateConfig"),
                        "rollback_config": spec_now.get("RollbackConfig"),
                        "endpoint_spec": spec_now.get("EndpointSpec"),
                    },
                )
            deadline = time.monotonic() + self.STOP_TIMEOUT
            while True:
                service = self._get_service(client, spec.name)
                if service is None:
                    return NodeStatus(name=spec.name, state="missing")
                tasks = self._tasks(client, service["ID"])
                if not any(_task_state(t) in _TASK_STARTED | _TASK_ON_ITS_WAY for t in tasks):
                    return self._status(client, service, tasks)
                if time.monotonic() > deadline:
                    raise TransientRuntimeError(f"the task of {spec.name} did not stop within {self.STOP_TIMEOUT:g} s")
                time.sleep(0.2)

    def remove_node(self, spec: NodeSpec, *, keep_data: bool) -> None:
        client = self._client()
        with self._translate():
            service = self._get_service(client, spec.name)
            if service is not None:
                self._check_owner(spec, service)
                try:
                    client.api.remove_service(service["ID"])
                except docker.errors.NotFound:
                    pass
            self._wait_tasks_gone(client, spec.name)
            self._drop_unused_secrets(client, spec, all_of_node=True)
            if not keep_data:
                self._remove_volume(client, spec)

    def remove_network(self, spec: NodeSpec) -> None:
        """The app's overlay network, once no service of ours uses it. Missing is fine."""
        client = self._client()
        with self._translate():
            for network in self._find_networks(client, spec.network):
                if not owned_by(network.get("Labels"), self._installation(spec)):
                    logger.warning("network %s is not ours; left untouched", spec.network)
                    continue
                users = [
                    s
                    for s in client.api.services()
                    if any(
                        n.get("Target") == network["Id"]
                        for n in (s["Spec"].get("TaskTemplate") or {}).get("Networks") or []
                    )
                ]
                if users:
                    logger.info("network %s is still used by %d service(s); kept", spec.network, len(users))
                    continue
                self._retry_in_use(lambda n=network["Id"]: client.api.remove_network(n), f"network {spec.network}")

    def observe(self, spec: NodeSpec) -> NodeStatus:
        client = self._client()
        with self._translate():
            service = self._get_service(client, spec.name)
            if service is None or not owned_by((service["Spec"].get("Labels")), self._installation(spec)):
                return NodeStatus(name=spec.name, state="missing")
            return self._status(client, service)

    def list_nodes(self, *, installation_id: str) -> list[NodeStatus]:
        """Three requests whatever the number of nodes (services, their running tasks, the
        hosts), and one more for each service Swarm gave up on."""
        client = self._client()
        with self._translate():
            services = client.api.services(
                filters={
                    "label": [
                        f"{LABEL_MANAGED}=true",
                        f"{LABEL_INSTALLATION}={installation_id}",
                        f"{LABEL_ROLE}=ledger",
                    ]
                }
            )
            if not services:
                return []
            ids = {s["ID"] for s in services}
            tasks: dict[str, list] = {}
            # Only the tasks Swarm means to run: it keeps a few ended ones per service
            # (task history), which would multiply the answer at 1,000 services.
            for task in client.api.tasks(filters={"desired-state": "running"}):
                if task.get("ServiceID") in ids:
                    tasks.setdefault(task["ServiceID"], []).append(task)
            for service in services:  # none meant to run, one wanted: ask why (as observe does)
                if service["ID"] not in tasks and service_replicas(service):
                    tasks[service["ID"]] = self._tasks(client, service["ID"])
            hosts = self._hosts(client)
            return [status_from_service(s, tasks.get(s["ID"], []), hosts) for s in services]

    # -- capabilities

    def update_status(self, spec: NodeSpec) -> dict[str, str]:
        """The service's last rolling update as Swarm reports it: ``{"state", "message"}``
        (empty when it was never updated or does not exist)."""
        client = self._client()
        with self._translate():
            service = self._get_service(client, spec.name)
        update = (service or {}).get("UpdateStatus") or {}
        return {"state": str(update.get("State") or ""), "message": str(update.get("Message") or "")}

    def published_ports(self) -> set[int]:
        """Host ports that services on this swarm publish (any owner), and those of plain
        containers on the manager."""
        client = self._client()
        with self._translate():
            ports = {
                int(p["PublishedPort"])
                for s in client.api.services()
                for p in (
                    (s.get("Endpoint") or {}).get("Ports") or (s["Spec"].get("EndpointSpec") or {}).get("Ports") or []
                )
                if p.get("PublishedPort")
            }
            ports |= {
                int(p["PublicPort"])
                for c in client.api.containers()
                for p in c.get("Ports") or []
                if p.get("PublicPort")
            }
        return ports

    # -- steps

    @staticmethod
    def _get_service(client, name: str) -> dict[str, Any] | None:
        found = [s for s in client.api.services(filters={"name": name}) if s["Spec"]["Name"] == name]
        return found[0] if found else None

    def _check_owner(self, spec: NodeSpec, service: dict[str, Any]) -> None:
        labels = service["Spec"].get("Labels") or {}
        if not owned_by(labels, self._installation(spec)):
            raise PermanentRuntimeError(
                f"a service named {spec.name} exists but is not owned by this installation; "
                "refusing to adopt or touch it"
            )
        if labels.get(LABEL_NODE) != spec.labels[LABEL_NODE]:
            raise TransientRuntimeError(
                f"service {spec.name} belongs to node {labels.get(LABEL_NODE)} of this installation, "
                f"not {spec.labels[LABEL_NODE]}; waiting for orphan cleanup"
            )

    @staticmethod
    def _tasks(client, service_id: str) -> list[dict[str, Any]]:
        return client.api.tasks(filters={"service": service_id})

    def _hosts(self, client) -> dict[str, str]:
        return {node["ID"]: node_host(node) for node in client.api.nodes()}

    def _status(self, client, service: dict[str, Any], tasks: list | None = None) -> NodeStatus:
        tasks = self._tasks(client, service["ID"]) if tasks is None else tasks
        return status_from_service(service, tasks, self._hosts(client))

    @staticmethod
    def _find_networks(client, name: str) -> list[dict[str, Any]]:
        return sorted(
            (n for n in client.api.networks(names=[name]) if n["Name"] == name),
            key=lambda n: (n.get("Created", ""), n["Id"]),
        )

    def _ensure_network(self, client, spec: NodeSpec) -> str:
        found = self._find_networks(client, spec.network)
        if not found:
            try:
                client.api.create_network(**overlay_create_kwargs(spec, encrypted=self.overlay_encryption))
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
            found = self._find_networks(client, spec.network)
        if not found:
            raise TransientRuntimeError(f"network {spec.network} was created but cannot be read back; look again")
        for network in found:
            labels = network.get("Labels") or {}
            # The app's network, or a platform service's (no app, its role): nothing else.
            same = (labels.get(LABEL_APP), labels.get(LABEL_ROLE)) == (
                spec.labels.get(LABEL_APP),
                spec.app_labels.get(LABEL_ROLE),
            )
            if not owned_by(labels, self._installation(spec)) or not same:
                raise PermanentRuntimeError(
                    f"a network named {spec.network} exists but is not owned by this installation/app; "
                    "refusing to adopt it"
                )
            driver = network.get("Driver")
            if not driver:  # a swarm network with no task on this host is listed without its driver
                driver = client.api.inspect_network(network["Id"], scope="swarm").get("Driver")
            # Still none: just created, the swarm's allocator has not got to it yet (ours by
            # its labels, so made as an overlay); only another driver is refused.
            if driver and driver != "overlay":
                raise PermanentRuntimeError(f"network {spec.network} is not an overlay network; refusing it")
        return found[0]["Id"]  # the oldest: every worker picks the same one after a race

    def _ensure_secrets(self, client, spec: NodeSpec) -> dict[str, tuple[str, str]]:
        """``{NAME: (id, name)}`` of the node's Swarm secrets, created when missing."""
        existing = {
            s["Spec"]["Name"]: s
            for s in client.api.secrets(
                filters={
                    "label": [
                        f"{LABEL_INSTALLATION}={self._installation(spec)}",
                        f"{LABEL_NODE}={spec.labels[LABEL_NODE]}",
                    ]
                }
            )
        }
        out: dict[str, tuple[str, str]] = {}
        for key, value in sorted(spec.secrets.items()):
            name = secret_name(spec, key, value)
            found = existing.get(name)
            if found is None:
                try:
                    created = client.api.create_secret(name=name, data=value.encode(), labels=secret_labels(spec, key))
                    out[key] = (created["ID"], name)
                    continue
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:
                        raise
                found = next(iter(client.api.secrets(filters={"name": name})), None)
                if found is None:
                    raise TransientRuntimeError(f"secret {name} exists but cannot be read back; look again") from None
            if not owned_by(found["Spec"].get("Labels"), self._installation(spec)):
                raise PermanentRuntimeError(f"a secret named {name} exists but is not owned by this installation")
            out[key] = (found["ID"], name)
        return out

    def _drop_unused_secrets(self, client, spec: NodeSpec, *, all_of_node: bool = False) -> None:
        """The node's secrets that no service references any more (rotated, or the node
        removed). A secret in use is refused by Swarm and left for next time."""
        mine = client.api.secrets(
            filters={
                "label": [f"{LABEL_INSTALLATION}={self._installation(spec)}", f"{LABEL_NODE}={spec.labels[LABEL_NODE]}"]
            }
        )
        if not mine:
            return
        used = set()
        if not all_of_node:
            for service in client.api.services(filters={"name": spec.name}):
                container = (service["Spec"].get("TaskTemplate") or {}).get("ContainerSpec") or {}
                used |= {s.get("SecretID") for s in container.get("Secrets") or []}
        for secret in mine:
            if secret["ID"] in used:
                continue
            try:
                client.api.remove_secret(secret["ID"])
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                logger.info("secret %s kept for now: %s", secret["Spec"]["Name"], exc.explanation or exc)

    def _image_on_hosts(self, client, ref: str) -> tuple[str, str | None]:
        """The image id every eligible host holds (loaded by content from the image source
        when missing or stale, ``image_sync``), each such host labelled with it so that
        Swarm places the task only where the image is. Returns (image reference for the
        service, short id for the placement label). Raises PermanentRuntimeError when no
        host of the region can hold it."""
        me = self._manager_id(client)
        region_label = NODE_LABEL_REGION.format(code=self.region_code)
        nodes = self._region_hosts(client)
        if not nodes:
            raise PermanentRuntimeError(
                f"no ready swarm host carries the label {region_label}=true; label the region's hosts "
                f"(docker node update --label-add {region_label}=true <host>)"
            )
        image_id, refused = None, []
        for node in nodes:
            labels = (node.get("Spec") or {}).get("Labels") or {}
            if node["ID"] == me:
                target, url = client, self.base_url
            elif labels.get(NODE_LABEL_ENGINE_URL):
                url = labels[NODE_LABEL_ENGINE_URL]
                target = self._client_at(url)
            else:
                refused.append(
                    f"{node['Description']['Hostname']} ({node['ID'][:12]}): no {NODE_LABEL_ENGINE_URL} label"
                )
                continue
            try:
                got = image_sync.image_ensure(target, url, ref, self._image_source)
            except RuntimeError_ as exc:
                refused.append(f"{node['ID'][:12]}: {exc}")
                # A label from an earlier load would still draw tasks to a host that may
                # have lost the image since: only a host that holds it now keeps one.
                source = self._image_source()
                wanted = image_sync.image_id(source, ref) if source is not None else None
                if wanted:
                    self._label_node(client, node, NODE_LABEL_IMAGE.format(short=wanted[7:19]), remove=True)
                continue
            image_id = image_id or got
            if got != image_id:
                refused.append(f"{node['ID'][:12]}: holds {got[7:19]}, not {image_id[7:19]}")
                continue
            self._label_node(client, node, NODE_LABEL_IMAGE.format(short=got[7:19]))
        if image_id is None:
            raise PermanentRuntimeError(
                f"the image {ref} cannot reach any host of region {self.region_code} without a registry: "
                + "; ".join(refused)
            )
        if refused:
            logger.warning("region %s: image %s not on every host: %s", self.region_code, ref, "; ".join(refused))
        return image_id, image_id[7:19]

    def _region_hosts(self, client) -> list[dict[str, Any]]:
        """The swarm nodes that run this region's services: labelled for the region, ready
        and active."""
        label = NODE_LABEL_REGION.format(code=self.region_code)
        return [
            n
            for n in client.api.nodes()
            if ((n.get("Spec") or {}).get("Labels") or {}).get(label) == "true"
            and (n.get("Spec") or {}).get("Availability", "active") == "active"
            and (n.get("Status") or {}).get("State") == "ready"
        ]

    def _reachable_hosts(self, client) -> list[tuple[str, Any]]:
        """``(swarm node id, its engine's client)`` of the hosts the driver can talk to
        directly: the manager, and hosts with an ``io.bsn.engine-url`` label."""
        me = self._manager_id(client)
        hosts: list[tuple[str, Any]] = [(me, client)]
        for node in client.api.nodes():
            url = ((node.get("Spec") or {}).get("Labels") or {}).get(NODE_LABEL_ENGINE_URL)
            if node["ID"] != me and url and url != self.base_url:
                hosts.append((node["ID"], self._client_at(url)))
        return hosts

    @staticmethod
    def _has_volume(engine, name: str) -> bool:
        try:
            engine.api.inspect_volume(name)
        except docker.errors.NotFound:
            return False
        return True

    @staticmethod
    def _label_node(client, node: dict[str, Any], label: str | None, *, remove: bool = False) -> None:
        spec = dict(node.get("Spec") or {})
        labels = dict(spec.get("Labels") or {})
        if label is None or (labels.get(label) == "true") != remove:
            return
        if remove:
            labels.pop(label)
        else:
            labels[label] = "true"
        spec["Labels"] = labels
        try:
            client.api.update_node(node["ID"], node["Version"]["Index"], spec)
        except docker.errors.APIError as exc:
            if "out of sequence" not in str(exc.explanation or exc):
                raise
            raise TransientRuntimeError(f"swarm node {node['ID'][:12]} changed meanwhile; look again") from exc

    def _wait_started(self, client, spec: NodeSpec, service: dict[str, Any]) -> NodeStatus:
        """Until the service's task runs and its port is known (a task Swarm cannot place or
        start says why), bounded by START_TIMEOUT."""
        deadline = time.monotonic() + self.START_TIMEOUT
        me = self._manager_id(client)
        nodes = client.api.nodes()
        hosts = {node["ID"]: node_host(node) for node in nodes}
        away = host_away(pinned_host(service), nodes)
        if away:  # Swarm cannot place it before that host is back: say so now, not in 90 s
            raise HostUnavailable(f"{spec.name} is pinned to the host that holds its data, which {away}")
        problem = ""
        while True:
            tasks = self._tasks(client, service["ID"])
            status = status_from_service(service, tasks, hosts)
            if status.state == "running":
                return status
            task = current_task(tasks)
            if task and _task_state(task) == "starting" and task.get("DesiredState") == "running":
                started = self._started_on_host(client, task, me, nodes)
                endpoint = sticky_endpoint(service, task, hosts) or mesh_endpoint(service, task, hosts)
                if started is not None and endpoint:
                    return NodeStatus(
                        name=spec.name,
                        state="running",
                        runtime_id=started,
                        endpoint=endpoint,
                        labels=dict(((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}),
                    )
                if task.get("NodeID") not in hosts:
                    nodes = client.api.nodes()  # a host that joined meanwhile
                    hosts = {node["ID"]: node_host(node) for node in nodes}
            problem = task_problem(task) or problem
            conflict = next((p for p in map(task_problem, tasks) if port_conflict(p) and str(spec.host_port) in p), "")
            if spec.host_port and conflict:
                problem = conflict
                with _suppress_api():
                    client.api.remove_service(service["ID"])
                raise PortInUse(spec.host_port, f"port {spec.host_port} is taken on the swarm host: {problem}")
            if time.monotonic() > deadline:
                raise TransientRuntimeError(
                    f"the task of {spec.name} did not start within {self.START_TIMEOUT:g} s "
                    f"(state {_task_state(task) if task else 'none'}: {problem or 'no reason given'})"
                )
            time.sleep(self.START_POLL)

    def _started_on_host(self, client, task: dict[str, Any], me: str, nodes: list[dict[str, Any]]) -> str | None:
        """The container id of a "starting" task if its container really runs, asked of the
        task's host (the manager itself, or a host with an engine URL label); None when it
        does not (yet) or the host cannot be asked (then Swarm's "running" is awaited)."""
        container_id = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if not container_id:
            return None
        if task.get("NodeID") == me:
            host = client
        else:
            node = next((n for n in nodes if n["ID"] == task.get("NodeID")), None)
            url = (((node or {}).get("Spec") or {}).get("Labels") or {}).get(NODE_LABEL_ENGINE_URL)
            if not url:
                return None
            host = self._client_at(url)
        try:
            state = host.api.inspect_container(container_id).get("State") or {}
        except docker.errors.NotFound:
            return None
        return container_id if state.get("Running") and not state.get("Restarting") else None

    def _wait_updated(self, client, spec: NodeSpec, before: str | None) -> NodeStatus:
        """Until the rolling update completed (the new task healthy and past its monitor
        window). A rollback is a permanent failure naming Swarm's reason."""
        deadline = time.monotonic() + self.UPDATE_TIMEOUT
        while True:
            service = self._get_service(client, spec.name)
            if service is None:
                raise TransientRuntimeError(f"service {spec.name} vanished during its update; look again")
            update = service.get("UpdateStatus") or {}
            state = update.get("State") or ""
            fresh = update.get("StartedAt") != before or not before
            if fresh and state in ("rollback_started", "rollback_completed", "rollback_paused", "paused"):
                if state == "rollback_started":
                    time.sleep(0.2)
                    if time.monotonic() < deadline:
                        continue
                raise RolledBack(
                    f"the rolling update of {spec.name} failed and Swarm rolled it back ({state}): "
                    f"{update.get('Message') or 'no reason given'}"
                )
            if fresh and state == "completed":
                status = self._status(client, service)
                if status.state == "running":
                    return status
            if time.monotonic() > deadline:
                raise TransientRuntimeError(
                    f"the rolling update of {spec.name} did not finish within {self.UPDATE_TIMEOUT:g} s "
                    f"(state {state or 'none'}: {update.get('Message') or ''})"
                )
            time.sleep(0.2)

    def _wait_tasks_gone(self, client, name: str, timeout: float = 30.0) -> None:
        """A removed service's containers go shortly after it; its volume and secrets can go then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = client.api.containers(all=True, filters={"label": f"com.docker.swarm.service.name={name}"})
            if not running:
                return
            time.sleep(0.2)
        raise TransientRuntimeError(f"the containers of service {name} are still there after {timeout:g} s")

    def _remove_volume(self, client, spec: NodeSpec) -> None:
        """The node's data volume on the hosts we can reach (the manager, and hosts with an
        engine URL label). Another installation's volume under the name is left alone."""
        for _, target in self._reachable_hosts(client):
            try:
                volume = target.api.inspect_volume(spec.volume)
            except docker.errors.NotFound:
                continue
            if not owned_by(volume.get("Labels"), self._installation(spec)):
                logger.warning("volume %s is not ours; left untouched", spec.volume)
                continue
            self._retry_in_use(lambda t=target: t.api.remove_volume(spec.volume), f"volume {spec.volume}")

    @staticmethod
    def _retry_in_use(action: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
        """Swarm releases a removed task's endpoints and mounts a moment after it reports
        the task gone: "in use" is retried for a while, then transient."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                action()
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                text = str(exc.explanation or exc).lower()
                if exc.status_code in (403, 409) or "in use" in text or "active endpoints" in text:
                    if time.monotonic() < deadline:
                        time.sleep(0.3)
                        continue
                    raise TransientRuntimeError(f"{what} is still in use: {exc.explanation or exc}") from exc
                raise


@contextmanager
def _suppress_api() -> Iterator[None]:
    try:
        yield
    except docker.errors.APIError:
        pass

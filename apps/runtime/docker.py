"""Docker Engine driver: runs each ledger node as one hardened container.

Two halves, as everywhere in this codebase:

- pure builders (``container_create_kwargs``, ``network_create_kwargs``,
  ``volume_create_kwargs``, ``endpoint_from_attrs``, ``classify_error``) — unit tested
  without an engine (tests/runtime/test_spec.py);
- ``DockerDriver`` — the thin part that sends them through the Docker SDK and
  classifies what comes back (tests/runtime/test_docker_driver.py, real engine).

Ownership rule: an object is ours only if it carries ``io.bsn.managed=true`` and this
installation's id. A same-named object without them is refused, never adopted, never
stopped or removed.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.models.networks import Network

from apps.runtime import image_sync
from apps.runtime.base import (
    Networks,
    NodeEvents,
    PermanentRuntimeError,
    PlatformServices,
    PortInUse,
    PublishedPorts,
    RuntimeError_,
    RuntimeUnavailable,
    TransientRuntimeError,
    WarmNodes,
)
from apps.runtime.nodeapi import NodeCallError, claim_warm_node, standing_by
from apps.runtime.spec import (
    CLAIM_FILE,
    LABEL_APP,
    LABEL_GENERATION,
    LABEL_INSTALLATION,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_ROLE,
    LABEL_WARM,
    NODE_DATA_PATH,
    SECRETS_DIR,
    NodeSpec,
    NodeStatus,
    secret_env,
    secret_files,
)
from bsn.ledger.claim import Claim, claim_key, seal

logger = logging.getLogger(__name__)

PEERS_ROLE = "peers"  # role label of an app's internal peer network

STOP_TIMEOUT = 10  # seconds between SIGTERM and SIGKILL on stop
# Bounded restarts by the engine itself; beyond that the reconciler (with its own
# backoff) decides. "always"/"unless-stopped" would crash-loop a broken node forever.
RESTART_POLICY = {"Name": "on-failure", "MaximumRetryCount": 3}
LOG_CONFIG = {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}}

_STATE_MAP = {
    "running": "running",
    "created": "stopped",
    "exited": "stopped",
    "dead": "stopped",
    "paused": "stopped",
    "restarting": "unknown",
    "removing": "unknown",
}


# --------------------------------------------------------------------------- builders


def volume_labels(spec: NodeSpec) -> dict[str, str]:
    """The data volume outlives generations, so it carries no generation label. Its role:
    ``ledger-data`` for a node, ``<role>-data`` for a platform service (``ordering-data``)."""
    role = spec.app_labels.get(LABEL_ROLE, "ledger")
    node = {LABEL_NODE: spec.labels[LABEL_NODE]} if LABEL_NODE in spec.labels else {}  # a warm node has none
    return {**spec.app_labels, **node, LABEL_ROLE: f"{role}-data"}


def is_warm(labels: dict[str, str] | None) -> bool:
    """Made as a warm node (docs/provisioning.md, "Warm nodes"): for no app or node yet."""
    labels = labels or {}
    return bool(labels.get(LABEL_WARM)) and LABEL_NODE not in labels


def same_node(labels: dict[str, str] | None, spec: NodeSpec) -> bool:
    """Is the object with these labels the spec's node's (container or volume)? Made for
    that node, or the warm node it was claimed from (which names no node)."""
    labels = labels or {}
    if spec.warm and is_warm(labels):
        return labels.get(LABEL_WARM) == spec.warm
    return LABEL_NODE in spec.labels and labels.get(LABEL_NODE) == spec.labels[LABEL_NODE]


def claim_settings(spec: NodeSpec) -> dict[str, str]:
    """What a warm node is claimed with: the node's environment and its secret files' paths."""
    return {**spec.env, **secret_env(spec, f"{NODE_DATA_PATH}/{SECRETS_DIR}")}


def network_create_kwargs(spec: NodeSpec) -> dict[str, Any]:
    return {
        "name": spec.network,
        "driver": "bridge",
        "labels": dict(spec.app_labels),
        "check_duplicate": True,
        "attachable": False,
    }


def volume_create_kwargs(spec: NodeSpec) -> dict[str, Any]:
    return {"name": spec.volume, "driver": "local", "labels": volume_labels(spec)}


def container_create_kwargs(spec: NodeSpec, *, network: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.create``: the whole hardening lives here.

    Never privileged, never host network, never the Docker socket; the only mount is
    the node's own volume at /data. The port is published on ``spec.publish_host``
    only, on ``spec.host_port`` (sticky across restarts) or, without one, on a port the
    engine picks at each start.
    """
    return {
        "name": spec.name,
        "image": spec.image,
        "command": list(spec.command) if spec.command else None,
        "environment": {**spec.env, **secret_env(spec, f"{NODE_DATA_PATH}/{SECRETS_DIR}")},
        "labels": dict(spec.labels),
        "user": spec.user,
        "read_only": spec.read_only,
        "tmpfs": dict(spec.tmpfs),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        "mem_limit": f"{spec.mem_limit_mb}m",
        "memswap_limit": f"{spec.mem_limit_mb}m",  # same as memory: no swap
        "nano_cpus": int(spec.cpus * 1e9),
        "pids_limit": spec.pids_limit,
        "ports": {
            f"{spec.port}/tcp": (spec.publish_host, spec.host_port),
            **{f"{inner}/tcp": (spec.publish_host, outer) for inner, outer in spec.extra_ports},
        },
        "volumes": {spec.volume: {"bind": NODE_DATA_PATH, "mode": "rw"}},
        "network": network or spec.network,
        "restart_policy": dict(RESTART_POLICY),
        "log_config": dict(LOG_CONFIG),
        "stop_signal": "SIGTERM",
        # A tiny init as PID 1 forwards SIGTERM even before the node installs its handler
        # (PID 1 ignores unhandled signals, so a stop would wait the full timeout) and
        # reaps zombies.
        "init": True,
        "detach": True,
    }


def _running_as(container: Container | None, spec: NodeSpec) -> bool:
    """Is ``container`` running, of the spec's generation (nothing to make or start)?"""
    return (
        container is not None
        and container.status == "running"
        and container.labels.get(LABEL_GENERATION) == spec.labels[LABEL_GENERATION]
    )


def secrets_archive(spec: NodeSpec, *, claim: bool = False) -> bytes:
    """A tar of the node's secret files for ``put_archive`` into its volume (at /data):
    ``.secrets/`` 0700 and one file per secret 0400, owned by the node's user, so only
    that user can read them. Written before every start; never in the container's config.

    ``claim``: for a warm node, also its claim (``CLAIM_FILE``: ``claim_settings``), last,
    so that the secrets are whole when the node sees it; 0600, replaced on a retry."""
    uid, gid = (int(part) for part in spec.user.split(":"))
    buffer = io.BytesIO()
    files = [(name, value, 0o400) for name, value in secret_files(spec).items()]
    if claim:
        settings = json.dumps(claim_settings(spec), sort_keys=True, separators=(",", ":"))
        files.append((CLAIM_FILE.rsplit("/", 1)[1], settings, 0o600))
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folder = tarfile.TarInfo(SECRETS_DIR)
        folder.type, folder.mode, folder.uid, folder.gid = tarfile.DIRTYPE, 0o700, uid, gid
        tar.addfile(folder)
        for name, value, mode in files:
            data = value.encode("utf-8")
            info = tarfile.TarInfo(f"{SECRETS_DIR}/{name}")
            info.size, info.mode, info.uid, info.gid = len(data), mode, uid, gid
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def format_endpoint(host: str, port: int | str) -> str:
    if ":" in host and not host.startswith("["):  # IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{port}"


def endpoint_from_attrs(attrs: dict[str, Any], spec_port: int, publish_host: str) -> str | None:
    """Read the engine-assigned host port back from an inspected container."""
    bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{spec_port}/tcp")
    if not bindings:
        return None
    chosen = next((b for b in bindings if b.get("HostIp") == publish_host), bindings[0])
    if not chosen.get("HostPort"):
        return None
    return format_endpoint(publish_host, chosen["HostPort"])


def status_from_summary(summary: dict[str, Any]) -> NodeStatus:
    """A node's status from its entry in the engine's container list (``GET /containers/json``).

    The list carries everything the reconciler needs (name, state, id, published ports,
    labels), so observing a region is one request, not one inspect per container. The
    endpoint is the first published TCP port in the order an inspect shows them (by
    "port/proto", IPv4 before IPv6), on its host IP (127.0.0.1 when it has none), and
    only while the container runs.
    """
    status = summary.get("State") or ""
    if isinstance(status, dict):  # an inspect-shaped entry
        status = status.get("Status") or ""
    names = summary.get("Names") or [""]
    published = [
        p for p in summary.get("Ports") or [] if p.get("Type") == "tcp" and p.get("PublicPort") and p.get("PrivatePort")
    ]
    published.sort(key=lambda p: (f"{p['PrivatePort']}/tcp", ":" in (p.get("IP") or "")))
    endpoint = None
    if published and status == "running":
        endpoint = format_endpoint(published[0].get("IP") or "127.0.0.1", published[0]["PublicPort"])
    return NodeStatus(
        name=names[0].lstrip("/"),
        state=_STATE_MAP.get(status, "unknown"),
        runtime_id=summary.get("Id"),
        endpoint=endpoint,
        labels=dict(summary.get("Labels") or {}),
    )


def owned_by(labels: dict[str, str] | None, installation_id: str) -> bool:
    labels = labels or {}
    return labels.get(LABEL_MANAGED) == "true" and labels.get(LABEL_INSTALLATION) == installation_id


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify_error(exc: BaseException, *, base_url: str = "", timeout: float | None = None) -> RuntimeError_:
    """Map an SDK/transport exception to Transient / Permanent / RuntimeUnavailable.

    A timeout is never success and never failure: the engine may or may not have done
    the work, so the caller must observe again.
    """
    if isinstance(exc, RuntimeError_):
        return exc
    where = f"Docker engine {base_url}" if base_url else "Docker engine"
    for err in _chain(exc):
        if isinstance(err, requests.exceptions.ConnectTimeout):
            return RuntimeUnavailable(f"{where} does not answer (connect timeout): {err}")
        if isinstance(err, requests.exceptions.Timeout):
            return TransientRuntimeError(
                f"{where} did not answer within {timeout}s; the outcome is unknown — observe again before acting: {err}"
            )
        if isinstance(err, requests.exceptions.ConnectionError | ConnectionError | FileNotFoundError):
            return RuntimeUnavailable(f"{where} does not answer: {err}")
    if isinstance(exc, docker.errors.ImageNotFound):
        return PermanentRuntimeError(
            f"image not found on {where}: {exc.explanation or exc}. Build it on that engine "
            "with `python manage.py bsn_images build` (no registry is used)."
        )
    if isinstance(exc, docker.errors.NotFound):
        # Something we just read disappeared under us (concurrent delete): look again.
        return TransientRuntimeError(f"object vanished concurrently on {where}: {exc.explanation or exc}")
    if isinstance(exc, docker.errors.APIError):
        code = exc.status_code or 0
        # "ambiguous": duplicate network names left by a concurrent create, cleaned up
        # by the next ensure — transient despite the 400.
        if code == 409 or code >= 500 or code == 0 or "ambiguous" in str(exc.explanation or ""):
            return TransientRuntimeError(f"{where} answered {code}: {exc.explanation or exc}")
        return PermanentRuntimeError(f"{where} refused the request ({code}): {exc.explanation or exc}")
    if isinstance(exc, docker.errors.DockerException):
        text = str(exc).lower()
        if "connection refused" in text or "fetching server api version" in text:
            return RuntimeUnavailable(f"{where} does not answer: {exc}")
        return PermanentRuntimeError(f"{where}: {exc}")
    return TransientRuntimeError(f"unexpected error talking to {where}: {exc!r}")


def _port_taken(exc: docker.errors.APIError) -> bool:
    text = str(exc.explanation or exc).lower()
    return "port is already allocated" in text or "address already in use" in text


def _never_starts(exc: docker.errors.APIError) -> str | None:
    """Why a stopped container would fail like this at every start (so only a new one of
    the same name, on the same volume, can run), or None for any other refusal.

    - its network is gone (removed and made again, or lost in an engine crash);
    - containerd still holds a task under its id: the engine stopped while a start was
      under way, and since its restart every start answers 500 "task <id>: already exists"
      ("id already in use" on older engines). A new container has a new id.
    """
    text = str(exc.explanation or exc).lower()
    if exc.status_code == 404 and "network" in text and "not found" in text:
        return "its network is gone"
    if (exc.status_code or 0) >= 500 and "task" in text and ("already exists" in text or "id already in use" in text):
        return "the engine kept a stale task of it from before a restart"
    return None


def _is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, docker.errors.APIError) and exc.status_code == 409


# --------------------------------------------------------------------------- driver

MIN_API_VERSION = "1.24"  # what the SDK still speaks; the engine's own version is asked


def engine_client(base_url: str, *, timeout: int, tls: docker.tls.TLSConfig | None = None) -> docker.DockerClient:
    """A client of the engine at ``base_url`` speaking the engine's API version.

    With TLS, the region's CA must be the one that verifies the engine. requests lets
    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` from the environment override a session's
    CA (psf/requests#3829), and the SDK's ``version="auto"`` probe runs inside the
    constructor, before the session can be told otherwise; so the version is asked by a
    client that ignores the environment, and the real client is made with it.
    """
    ssh = base_url.startswith("ssh://")
    if not tls:
        # version="auto" asks the engine once, so old engines (API < SDK default) work.
        client = docker.DockerClient(base_url=base_url, timeout=timeout, version="auto", use_ssh_client=ssh)
        if base_url.startswith("unix://"):
            # No proxy or .netrc applies to a local socket; requests would still read the
            # whole environment (and look for ~/.netrc) on every call: ~0.5 ms of CPU each.
            client.api.trust_env = False
        return client
    probe = docker.DockerClient(base_url=base_url, timeout=timeout, tls=tls, version=MIN_API_VERSION)
    probe.api.trust_env = False
    try:
        version = probe.version(api_version=False)["ApiVersion"]
    finally:
        probe.close()
    client = docker.DockerClient(base_url=base_url, timeout=timeout, tls=tls, version=version)
    client.api.trust_env = False
    return client


class EngineClients:
    """Client plumbing of the drivers that speak the Docker Engine API (docker, swarm): one
    cached client per engine URL, the engine images are built on, errors classified.

    The driver sets ``base_url``, ``timeout``, ``tls``, ``image_source_url``, ``_clients``
    and ``_lock`` in its ``__init__``.
    """

    base_url: str
    timeout: int
    tls: docker.tls.TLSConfig | None
    image_source_url: str | None
    _clients: dict[str, docker.DockerClient]
    _lock: threading.Lock

    def _client(self) -> docker.DockerClient:
        return self._client_at(self.base_url)

    def _client_at(self, url: str) -> docker.DockerClient:
        """The client of the engine at ``url`` (this driver's TLS material)."""
        client = self._clients.get(url)
        if client is not None:
            return client
        with self._lock, self._translate():
            client = self._clients.get(url)
            if client is None:
                client = self._clients[url] = engine_client(url, timeout=self.timeout, tls=self.tls)
            return client

    def _new_client(self) -> docker.DockerClient:
        """A client of the driver's engine of its own, not cached (a stream that holds a connection)."""
        return engine_client(self.base_url, timeout=self.timeout, tls=self.tls)

    def _image_source(self) -> docker.DockerClient | None:
        """The engine the images are built on (apps/runtime/image_sync.py); None: the
        driver's engine must hold them itself."""
        url = self.image_source_url
        if not url:
            return None
        if url == self.base_url:
            return self._client()
        client = self._clients.get(url)
        if client is None:
            with self._lock:
                client = self._clients.get(url)
                if client is None:
                    # The source is the control plane's own engine: a local socket, no TLS.
                    client = self._clients[url] = docker.DockerClient(
                        base_url=url, timeout=max(self.timeout, 120), version="auto"
                    )
        return client

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except RuntimeError_:
            raise
        except Exception as exc:  # classified, never swallowed
            raise classify_error(exc, base_url=self.base_url, timeout=self.timeout) from exc

    @staticmethod
    def _installation(spec: NodeSpec) -> str:
        return spec.labels[LABEL_INSTALLATION]


class DockerDriver(EngineClients):
    """Executes node specs on one Docker Engine (local socket, tcp+TLS or ssh)."""

    CAPABILITIES = (Networks, PlatformServices, PublishedPorts, NodeEvents, WarmNodes)
    name = "docker"

    def __init__(
        self,
        base_url: str,
        timeout: int,
        tls: docker.tls.TLSConfig | None = None,
        *,
        image_source_url: str | None = None,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.tls = tls
        # The engine images are built on (apps/runtime/image_sync.py); None: this engine
        # must hold the images itself.
        self.image_source_url = image_source_url
        self._clients: dict[str, docker.DockerClient] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DockerDriver({self.base_url!r})"

    # -- protocol

    def node_events(self, *, installation_id: str, stop) -> Iterator[tuple[str, str]]:
        """(container name, action) of this installation's ledger containers that died or
        were destroyed, as the engine reports them, until ``stop`` is set or the stream
        breaks (raises TransientRuntimeError: the caller reconnects). A client of its own:
        the stream blocks a connection for as long as it is open."""
        with self._translate():
            client = self._new_client()
        try:
            with self._translate():
                # The SDK reads events with no timeout: an idle stream waits; closing it ends it.
                stream = client.events(
                    decode=True,
                    filters={
                        "type": "container",
                        "event": ["die", "destroy"],
                        "label": [f"{LABEL_INSTALLATION}={installation_id}", f"{LABEL_ROLE}=ledger"],
                    },
                )
                try:
                    for event in stream:
                        if stop.is_set():
                            return
                        actor = event.get("Actor") or {}
                        name = (actor.get("Attributes") or {}).get("name")
                        if name:
                            yield name, str(event.get("Action") or event.get("status") or "")
                finally:
                    stream.close()
        finally:
            client.close()

    def ping(self) -> None:
        client = self._client()
        with self._translate():
            client.ping()

    def ensure_node(self, spec: NodeSpec) -> NodeStatus:
        client = self._client()
        with self._translate():
            found = self._get_container(client, spec.name)
            # The network and volume, ensured on the first call only. A running container of
            # the spec's generation (a warm node being claimed, a node already up) stands on
            # both: the engine removes neither under it. They are ensured only when a
            # container is to be made or started: two engine calls fewer on each claim.
            network = functools.cache(functools.partial(self._ensure_network_and_volume, client, spec))
            if not _running_as(found, spec):
                network()
            container = self._ensure_container(client, spec, network, found=found)
            return self._status_of(spec, container)

    def ensure_network(self, spec: NodeSpec) -> str:
        """Create or adopt the app's network (by name + labels) and return its id. Idempotent.

        For callers that attach something to the network before the node starts (the
        ordering service of etcd-ordered apps); ``ensure_node`` does this step itself too.
        """
        client = self._client()
        with self._translate():
            return self._ensure_network(client, spec).id

    def stop_node(self, spec: NodeSpec) -> NodeStatus:
        client = self._client()
        with self._translate():
            container = self._get_container(client, spec.name)
            if container is None:
                return NodeStatus(name=spec.name, state="missing")
            self._check_container_owner(spec, container)
            if container.status in ("running", "restarting", "paused"):
                container.stop(timeout=STOP_TIMEOUT)
                container.reload()
            return self._status_of(spec, container)

    def remove_node(self, spec: NodeSpec, *, keep_data: bool) -> None:
        client = self._client()
        with self._translate():
            container = self._get_container(client, spec.name)
            if container is not None:
                self._check_container_owner(spec, container)
                try:
                    # v=True drops anonymous volumes only; the named data volume stays.
                    container.remove(force=True, v=True)
                except docker.errors.NotFound:
                    pass
            if keep_data:
                return
            try:
                volume = client.volumes.get(spec.volume)
            except docker.errors.NotFound:
                return
            if not owned_by(volume.attrs.get("Labels"), self._installation(spec)):
                logger.warning("volume %s is not ours; left untouched", spec.volume)
                return
            try:
                volume.remove()
            except docker.errors.NotFound:
                pass

    def remove_network(self, spec: NodeSpec) -> None:
        # Another node of the app may still use it; whoever removes the last node removes it.
        self.remove_unused_network(spec.network, installation_id=self._installation(spec))

    def observe(self, spec: NodeSpec) -> NodeStatus:
        client = self._client()
        with self._translate():
            container = self._get_container(client, spec.name)
            if container is None:
                return NodeStatus(name=spec.name, state="missing")
            if not owned_by(container.labels, self._installation(spec)):
                # Someone else's container under our name: not our node, so ours is missing.
                return NodeStatus(name=spec.name, state="missing")
            return self._status_of(spec, container)

    def list_nodes(self, *, installation_id: str) -> list[NodeStatus]:
        client = self._client()
        with self._translate():
            # One list request: the summaries hold all we need (no inspect per container,
            # which made a pass over 200 nodes cost 0.8 s here).
            summaries = client.api.containers(
                all=True,
                # Ledger nodes only: ordering members carry role=ordering and are healed by
                # apps.ordering, never treated as orphans of an app.
                filters={
                    "label": [
                        f"{LABEL_MANAGED}=true",
                        f"{LABEL_INSTALLATION}={installation_id}",
                        f"{LABEL_ROLE}=ledger",
                    ]
                },
            )
            return [status_from_summary(summary) for summary in summaries]

    # -- steps of ensure_node

    @staticmethod
    def _find_networks(client: docker.DockerClient, name: str) -> list[Network]:
        # The name filter matches substrings; keep exact matches, oldest first so every
        # worker picks the same one if a race ever produced duplicates.
        found = [n for n in client.networks.list(names=[name]) if n.name == name]
        return sorted(found, key=lambda n: (n.attrs.get("Created", ""), n.id))

    def _find_or_create_networks(
        self,
        client: docker.DockerClient,
        spec: NodeSpec,
        create_kwargs: dict[str, Any],
        key: str,
        value: str,
        whose: str,
    ) -> list[Network]:
        """Every network named ``spec.network`` (creating it if none), each checked to be ours.

        Ours means this installation's labels and ``labels[key] == value``; anything else
        with the name is refused, never adopted.
        """
        networks = self._find_networks(client, spec.network)
        if not networks:
            try:
                client.networks.create(**create_kwargs)
            except docker.errors.APIError as exc:
                if not _is_conflict(exc):  # 409: created concurrently, read it back below
                    raise
            networks = self._find_networks(client, spec.network)
        if not networks:
            raise TransientRuntimeError(f"network {spec.network} was created but cannot be read back; look again")
        for network in networks:
            labels = network.attrs.get("Labels") or {}
            if not owned_by(labels, self._installation(spec)) or labels.get(key) != value:
                raise PermanentRuntimeError(
                    f"a network named {spec.network} exists but is not {whose}; refusing to adopt it"
                )
        return networks

    def _ensure_network_and_volume(self, client: docker.DockerClient, spec: NodeSpec) -> Network:
        network = self._ensure_network(client, spec)
        self._ensure_volume(client, spec)
        return network

    def _ensure_network(self, client: docker.DockerClient, spec: NodeSpec) -> Network:
        # A claimed warm node's network is the warm node's (labelled by it, not by an app).
        key, value = (LABEL_WARM, spec.warm) if spec.warm else (LABEL_APP, spec.labels[LABEL_APP])
        networks = self._find_or_create_networks(
            client, spec, network_create_kwargs(spec), key, value, "owned by this installation/app"
        )
        if len(networks) == 1:
            return networks[0]
        # The engine's duplicate-name check is racy: concurrent creates can yield several
        # networks with one name. Keep the one in use (else the oldest) and drop unused
        # extras; a worker that raced on an extra gets a transient error and converges.
        for network in networks:
            with contextlib.suppress(docker.errors.NotFound):
                network.reload()
        networks.sort(key=lambda n: (not n.attrs.get("Containers"), n.attrs.get("Created", ""), n.id))
        winner, extras = networks[0], networks[1:]
        for extra in extras:
            if extra.attrs.get("Containers"):
                continue
            try:
                extra.remove()
            except docker.errors.APIError as exc:
                logger.info("duplicate network %s (%s) not removed: %s", spec.network, extra.id, exc)
        return winner

    def _ensure_volume(self, client: docker.DockerClient, spec: NodeSpec) -> None:
        try:
            volume = client.volumes.get(spec.volume)
        except docker.errors.NotFound:
            # Creating an existing volume returns it unchanged, so a concurrent create is
            # harmless — the ownership check below still applies to what we got.
            volume = client.volumes.create(**volume_create_kwargs(spec))
        labels = volume.attrs.get("Labels") or {}
        ours = owned_by(labels, self._installation(spec)) and same_node(labels, spec)
        if not ours or not (is_warm(labels) or labels.get(LABEL_APP) == spec.labels.get(LABEL_APP)):
            raise PermanentRuntimeError(
                f"a volume named {spec.volume} exists but is not owned by this node; refusing to adopt it"
            )

    @staticmethod
    def _get_container(client: docker.DockerClient, name: str) -> Container | None:
        try:
            container = client.containers.get(name)
        except docker.errors.NotFound:
            return None
        # get() also matches id prefixes; our names are never hex, but be exact anyway.
        return container if container.name == name else None

    def _check_container_owner(self, spec: NodeSpec, container: Container) -> None:
        labels = container.labels or {}
        if not owned_by(labels, self._installation(spec)):
            raise PermanentRuntimeError(
                f"a container named {spec.name} exists but is not owned by this installation; "
                "refusing to adopt or touch it"
            )
        if not same_node(labels, spec):
            # Ours, but an older node row under the same name: the reconciler removes such
            # orphans after a grace period, so a later attempt can succeed.
            raise TransientRuntimeError(
                f"container {spec.name} belongs to node {labels.get(LABEL_NODE) or labels.get(LABEL_WARM)} of "
                f"this installation, not {spec.labels.get(LABEL_NODE) or spec.warm}; waiting for orphan cleanup"
            )

    def _create_container(self, client: docker.DockerClient, spec: NodeSpec, network: Network) -> Container:
        # The image by content (its id), streamed from the image source if this engine
        # lacks it or holds a stale one under the same tag.
        image_sync.image_ensure(client, self.base_url, spec.image, self._image_source)
        try:
            return client.containers.create(**container_create_kwargs(spec, network=network.id))
        except docker.errors.APIError as exc:
            if not _is_conflict(exc) or isinstance(exc, docker.errors.ImageNotFound):
                raise
            container = self._get_container(client, spec.name)  # a concurrent create won
            if container is None:
                raise TransientRuntimeError(f"name {spec.name} is in use but cannot be read back; look again") from exc
            return container

    def _ensure_container(
        self, client: docker.DockerClient, spec: NodeSpec, network: Callable[[], Network], *, found: Container | None
    ) -> Container:
        """``found``: the container named ``spec.name`` as just read (None: there is none);
        ``network()``: the network to make it on (called only when one is made)."""
        container = found
        if container is None:
            container = self._create_container(client, spec, network())
        self._check_container_owner(spec, container)

        if container.labels.get(LABEL_GENERATION) != spec.labels[LABEL_GENERATION] or container.status == "dead":
            logger.info(
                "recreating %s (generation %s -> %s, status %s)",
                spec.name,
                container.labels.get(LABEL_GENERATION),
                spec.labels[LABEL_GENERATION],
                container.status,
            )
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
            container = self._create_container(client, spec, network())
            self._check_container_owner(spec, container)

        claim = LABEL_NODE in spec.labels and is_warm(container.labels)
        if container.status == "paused":
            container.unpause()
        if claim and container.status in ("running", "paused"):
            # A warm node waiting for its claim (or claimed before: the same claim again).
            if self._claim_over_http(spec, container):
                return container  # it answered 200 on its port: running, as just read
            self._write_secrets(spec, container, claim=True)
        elif container.status == "running":
            return container  # up as just read, nothing done: nothing to read again
        elif container.status == "removing":
            raise TransientRuntimeError(f"container {spec.name} is being removed; look again")
        elif container.status != "paused":
            self._write_secrets(spec, container, claim=claim)
            try:
                container.start()
            except docker.errors.APIError as exc:
                if spec.host_port and _port_taken(exc):
                    with contextlib.suppress(docker.errors.APIError):
                        container.remove(force=True, v=True)
                    raise PortInUse(spec.host_port, f"{spec.publish_host}:{spec.host_port} is taken: {exc}") from None
                why = _never_starts(exc)
                if why is None:
                    raise
                # It would fail like this at every start. Its data is on the named volume:
                # make the container anew.
                logger.warning("recreating %s: %s (%s)", spec.name, why, exc)
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True, v=True)
                container = self._create_container(client, spec, network())
                self._check_container_owner(spec, container)
                self._write_secrets(spec, container)
                container.start()
        container.reload()
        if container.status not in ("running", "restarting"):
            state = container.attrs.get("State") or {}
            tail = container.logs(tail=20).decode("utf-8", "replace").strip()
            raise TransientRuntimeError(
                f"container {spec.name} is {container.status} right after start "
                f"(exit code {state.get('ExitCode')}, error {state.get('Error')!r}); last log lines:\n{tail}"
            )
        return container

    def warm_ready(self, status: NodeStatus) -> bool:
        """A started warm node is ready once its node program listens for its claim on its
        published port (its imports take a moment after the container starts): claimed
        before then, its claim would be copied in through the engine, the slow way."""
        return bool(status.endpoint) and standing_by(status.endpoint)

    @staticmethod
    def _claim_over_http(spec: NodeSpec, container: Container) -> bool:
        """Hand a running warm node its claim on its own port, sealed with its claim key
        (bsn/ledger/claim.py): a few milliseconds, where copying the claim in through the
        engine (``_write_secrets``) costs the engine an archive extraction, ~40 ms of CPU
        (docs/provisioning.md, "Warm nodes"). False when it was not taken (no key, no
        answer, refused, claimed already): the caller copies the claim in instead."""
        endpoint = endpoint_from_attrs(container.attrs, spec.port, spec.publish_host)
        if not spec.claim_key or container.status != "running" or endpoint is None:
            return False
        sealed = seal(claim_key(spec.claim_key), Claim(settings=claim_settings(spec), files=secret_files(spec)))
        try:
            status = claim_warm_node(endpoint, sealed)
        except NodeCallError as exc:  # no answer (taken or not is unknown): the copy decides
            logger.info("claiming %s over HTTP: %s; copying the claim in", spec.name, exc)
            return False
        if status == 409:
            # The stand-by server has a claim, sealed with this warm node's key, which only
            # its one node gets (the try before was taken, its answer lost): it is this one.
            return True
        if status != 200:
            logger.info("claiming %s over HTTP: HTTP %s; copying the claim in", spec.name, status)
        return status == 200

    @staticmethod
    def _write_secrets(spec: NodeSpec, container: Container, *, claim: bool = False) -> None:
        """Secret files into the node's volume of the stopped container (the engine mounts
        its volumes for the copy; the root filesystem stays read-only). ``claim``: a warm
        node's claim as well, into the volume of the running (or stopped) container."""
        if not spec.secrets and not claim:
            return
        if not container.put_archive(NODE_DATA_PATH, secrets_archive(spec, claim=claim)):
            raise TransientRuntimeError(f"could not write the secret files of {spec.name}; look again")

    def _status_of(self, spec: NodeSpec, container: Container) -> NodeStatus:
        state = _STATE_MAP.get(container.status, "unknown")
        endpoint = endpoint_from_attrs(container.attrs, spec.port, spec.publish_host) if state == "running" else None
        return NodeStatus(
            name=spec.name,
            state=state,
            runtime_id=container.id,
            endpoint=endpoint,
            labels=dict(container.labels or {}),
        )

    # -- platform services (the ordering service's etcd members, apps/ordering)
    #
    # Same hardening and ownership rules as app nodes, but the network and volume belong
    # to the service: they carry ``spec.app_labels`` (managed, installation, role) rather
    # than an app's labels. Nothing above changes for app nodes.

    def ensure_service(self, spec: NodeSpec) -> NodeStatus:
        """Create or adopt a platform service container, its network and volume; start it. Idempotent."""
        client = self._client()
        with self._translate():
            network = self._ensure_service_network(client, spec)
            self._ensure_service_volume(client, spec)
            container = self._ensure_container(
                client, spec, lambda: network, found=self._get_container(client, spec.name)
            )
            return self._status_of(spec, container)

    def _ensure_service_network(self, client: docker.DockerClient, spec: NodeSpec) -> Network:
        role = spec.app_labels.get(LABEL_ROLE)
        create = {"name": spec.network, "driver": "bridge", "labels": dict(spec.app_labels), "check_duplicate": True}
        networks = self._find_or_create_networks(
            client, spec, create, LABEL_ROLE, role, f"this installation's {role} network"
        )
        return networks[0]  # oldest: every worker picks the same one after a create race

    def _ensure_service_volume(self, client: docker.DockerClient, spec: NodeSpec) -> None:
        wanted = volume_labels(spec)
        try:
            volume = client.volumes.get(spec.volume)
        except docker.errors.NotFound:
            volume = client.volumes.create(name=spec.volume, driver="local", labels=wanted)
        labels = volume.attrs.get("Labels") or {}
        if not owned_by(labels, self._installation(spec)) or labels.get(LABEL_NODE) != wanted[LABEL_NODE]:
            raise PermanentRuntimeError(
                f"a volume named {spec.volume} exists but is not owned by {spec.name}; refusing to adopt it"
            )

    def connect_to_network(self, container_name: str, network_name: str, *, installation_id: str) -> bool:
        """Attach our container to our network (DNS name = container name). True if newly attached.

        Idempotent: already attached is fine (then nothing is looked up further). Both objects
        must carry this installation's ownership labels; anything else is refused before any change.
        """
        client = self._client()
        with self._translate():
            container = self._get_container(client, container_name)
            if container is None:
                raise TransientRuntimeError(f"container {container_name} does not exist (yet)")
            if not owned_by(container.labels, installation_id):
                raise PermanentRuntimeError(f"container {container_name} is not owned by this installation")
            attached = ((container.attrs.get("NetworkSettings") or {}).get("Networks") or {}).keys()
            if network_name in attached:
                return False  # nothing to do, so no need to look the network up (one engine call)
            networks = self._find_networks(client, network_name)
            if not networks:
                raise TransientRuntimeError(f"network {network_name} does not exist (yet)")
            network = networks[0]
            if not owned_by(network.attrs.get("Labels"), installation_id):
                raise PermanentRuntimeError(f"network {network_name} is not owned by this installation")
            try:
                network.connect(container)
            except docker.errors.APIError as exc:
                text = str(exc.explanation or exc).lower()
                if exc.status_code in (403, 409) and "already exists" in text:
                    return False
                raise
            return True

    def published_ports(self) -> set[int]:
        """Host ports that running containers on this engine publish (any owner)."""
        client = self._client()
        with self._translate():
            listed = client.api.containers()
        return {int(p["PublicPort"]) for c in listed for p in c.get("Ports") or [] if p.get("PublicPort")}

    def volume_exists(self, name: str) -> bool:
        client = self._client()
        with self._translate():
            try:
                client.volumes.get(name)
            except docker.errors.NotFound:
                return False
            return True

    def ensure_internal_network(self, name: str, labels: dict[str, str]) -> None:
        """Create or adopt an internal network (no gateway, no way out) named ``name``. Idempotent.

        For containers of one app that must reach each other by name while keeping their
        own network's default route (joining a network with a gateway can take over the
        route that published ports answer through). Callers serialise creation (the
        engine's duplicate-name check is racy). A same-named network that is not ours, or
        not internal, is refused.
        """
        client = self._client()
        installation = labels[LABEL_INSTALLATION]
        with self._translate():
            found = self._find_networks(client, name)
            if not found:
                try:
                    client.networks.create(
                        name=name,
                        driver="bridge",
                        internal=True,
                        labels={**labels, LABEL_ROLE: PEERS_ROLE},
                        check_duplicate=True,
                    )
                except docker.errors.APIError as exc:
                    if not _is_conflict(exc):
                        raise
                found = self._find_networks(client, name)
            for network in found:
                mine = owned_by(network.attrs.get("Labels"), installation)
                if not mine or (network.attrs.get("Labels") or {}).get(LABEL_APP) != labels.get(LABEL_APP):
                    raise PermanentRuntimeError(f"a network named {name} exists but is not this app's; refusing it")
                if not network.attrs.get("Internal"):
                    raise PermanentRuntimeError(f"network {name} is not internal; refusing to attach nodes to it")

    def remove_unused_network(self, name: str, *, installation_id: str) -> bool:
        """Remove our network ``name`` (every copy of it) unless a container uses it; True if
        it is gone. Someone else's network with that name is left untouched."""
        client = self._client()
        gone = True
        with self._translate():
            for network in self._find_networks(client, name):
                if not owned_by(network.attrs.get("Labels"), installation_id):
                    logger.warning("network %s is not ours; left untouched", name)
                    gone = False
                    continue
                network.reload()
                if network.attrs.get("Containers"):
                    logger.info("network %s still has endpoints; kept", name)
                    gone = False
                    continue
                try:
                    network.remove()
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    if exc.status_code in (403, 409):  # an endpoint appeared meanwhile
                        logger.info("network %s became busy; kept: %s", name, exc)
                        gone = False
                        continue
                    raise
        return gone

    def disconnect_from_network(self, container_name: str, network_name: str, *, installation_id: str) -> bool:
        """Detach our container from our network. True if it was attached. Missing objects are fine."""
        client = self._client()
        with self._translate():
            container = self._get_container(client, container_name)
            networks = self._find_networks(client, network_name)
            if container is None or not networks:
                return False
            network = networks[0]
            if not owned_by(container.labels, installation_id) or not owned_by(
                network.attrs.get("Labels"), installation_id
            ):
                raise PermanentRuntimeError(f"{container_name} or {network_name} is not owned by this installation")
            try:
                network.disconnect(container, force=True)
            except docker.errors.APIError as exc:
                # Not connected (any more): 403/404/409, or a 500 that says so (Docker 28).
                if exc.status_code in (403, 404, 409) or "is not connected" in str(exc.explanation or exc):
                    return False
                raise
            return True

    def owned_networks(self, *, installation_id: str, label: str = LABEL_APP) -> list[str]:
        """Names of this installation's networks on this engine that carry ``label`` (default: app networks)."""
        client = self._client()
        with self._translate():
            networks = client.networks.list(
                filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_INSTALLATION}={installation_id}", label]}
            )
            # An app's internal peer network is for its nodes only (ensure_internal_network).
            return sorted({n.name for n in networks if (n.attrs.get("Labels") or {}).get(LABEL_ROLE) != PEERS_ROLE})

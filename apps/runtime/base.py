"""The interface every runtime driver implements, and its error classes.

Drivers classify failures: ``TransientRuntimeError`` (engine unreachable, timeout,
conflict that a second look may resolve — the caller retries with backoff and treats
the outcome as *unknown*, never as success) and ``PermanentRuntimeError`` (bad image,
invalid config — retrying cannot help).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from apps.runtime.spec import NodeSpec, NodeStatus


class RuntimeError_(Exception):
    """Base class of driver errors."""

    transient = False


class TransientRuntimeError(RuntimeError_):
    """Retry later; the real state is unknown until observed again."""

    transient = True


class PermanentRuntimeError(RuntimeError_):
    """Retrying will not help."""

    transient = False


def is_transient(exc: BaseException) -> bool:
    """The one question retry logic asks of an error, whichever adapter raised it: may
    trying again later succeed? Every adapter's error family carries the same
    ``transient`` flag -- drivers (TransientRuntimeError), etcd (EtcdUnavailable,
    EtcdCompacted), node calls (NodeCallError) -- and so do OSError's connection and
    timeout errors; anything else (a bug, a refusal) is not transient."""
    flag = getattr(exc, "transient", None)
    if flag is not None:
        return bool(flag)
    return isinstance(exc, ConnectionError | TimeoutError)


class RolledBack(PermanentRuntimeError):
    """A rolling update failed and the runtime put the previous generation back (Swarm):
    the node runs what it ran before, not what was asked."""


class RuntimeUnavailable(TransientRuntimeError):
    """The region's engine does not answer."""


class HostUnavailable(TransientRuntimeError):
    """The one host a pinned service may run on (``NodeSpec.pinned``) is drained or down:
    it waits for that host rather than start empty elsewhere. The region itself answers."""


class PortInUse(TransientRuntimeError):
    """The node's host port is taken on the engine (by something else); pick another."""

    def __init__(self, port: int, message: str) -> None:
        super().__init__(message)
        self.port = port


class RuntimeDriver(Protocol):
    name: str

    def ping(self) -> None:
        """Raise RuntimeUnavailable if the engine does not answer."""

    def ensure_node(self, spec: NodeSpec) -> NodeStatus:
        """Create or adopt (by name + labels) network, volume and node; start it. Idempotent."""

    def stop_node(self, spec: NodeSpec) -> NodeStatus:
        """Stop the node if running; a missing node is not an error. Idempotent."""

    def remove_node(self, spec: NodeSpec, *, keep_data: bool) -> None:
        """Remove the node (and its volume unless keep_data). Missing is fine. Idempotent."""

    def remove_network(self, spec: NodeSpec) -> None:
        """Remove the app's network if no container uses it any more. Idempotent."""

    def observe(self, spec: NodeSpec) -> NodeStatus:
        """Current state of one node (missing if absent)."""

    def list_nodes(self, *, installation_id: str) -> list[NodeStatus]:
        """Every node this installation owns on this engine (for the reconciler)."""


# Capabilities beyond RuntimeDriver. A driver declares the ones it implements in
# ``CAPABILITIES`` (and implements every method of each); callers ask ``supports(driver,
# Capability)`` instead of probing for methods, and the conformance suite
# (tests/runtime/test_driver_conformance.py) holds every driver to its declaration.


@runtime_checkable
class Networks(Protocol):
    """Nodes live on per-app networks the driver makes, joins and removes (Docker; the
    process driver's nodes share loopback and have none)."""

    def ensure_network(self, spec: NodeSpec) -> str: ...

    def ensure_internal_network(self, name: str, labels: dict[str, str]) -> None: ...

    def connect_to_network(self, container_name: str, network_name: str, *, installation_id: str) -> bool: ...

    def disconnect_from_network(self, container_name: str, network_name: str, *, installation_id: str) -> bool: ...

    def remove_unused_network(self, name: str, *, installation_id: str) -> bool: ...

    def owned_networks(self, *, installation_id: str, label: str = ...) -> list[str]: ...


@runtime_checkable
class PlatformServices(Protocol):
    """The platform's own services (the ordering members) run on this engine."""

    def ensure_service(self, spec: NodeSpec) -> NodeStatus: ...

    def volume_exists(self, name: str) -> bool: ...


@runtime_checkable
class PublishedPorts(Protocol):
    """Nodes publish a host port the driver must choose free of what the engine publishes."""

    def published_ports(self) -> set[int]: ...


@runtime_checkable
class NodeEvents(Protocol):
    """The engine reports nodes that die or are removed (healing in seconds)."""

    def node_events(self, *, installation_id: str, stop: threading.Event) -> Iterator[tuple[str, str]]: ...


@runtime_checkable
class RollingUpdates(Protocol):
    """``ensure_node`` with a new generation replaces the node by itself: one task at a
    time, gated by the node's health check, rolled back when it fails (Swarm's service
    update). Callers do not stop the node first; a rollback is a PermanentRuntimeError."""

    def update_status(self, spec: NodeSpec) -> dict[str, str]: ...


@runtime_checkable
class WarmNodes(Protocol):
    """Nodes can be started ahead for no app and claimed in place (docs/provisioning.md,
    "Warm nodes"): ``ensure_node`` of a spec from ``build_warm_spec`` makes one (labelled by
    its warm id, waiting for its claim); ``ensure_node`` of a node's spec naming that id
    (``spec.warm``, ``spec.claim_key``) adopts its objects and hands it the node's settings
    and secrets, whatever way the driver delivers them; ``warm_ready`` says whether a
    started warm node is ready to be claimed that way."""

    def warm_ready(self, status: NodeStatus) -> bool: ...


CAPABILITIES = (Networks, PlatformServices, PublishedPorts, NodeEvents, RollingUpdates, WarmNodes)


def supports(driver: object, capability: type) -> bool:
    """Whether ``driver`` declares ``capability`` (one of CAPABILITIES)."""
    return capability in getattr(driver, "CAPABILITIES", ())

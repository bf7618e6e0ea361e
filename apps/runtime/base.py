"""The interface every runtime driver implements, and its error classes.

Drivers classify failures: ``TransientRuntimeError`` (engine unreachable, timeout,
conflict that a second look may resolve — the caller retries with backoff and treats
the outcome as *unknown*, never as success) and ``PermanentRuntimeError`` (bad image,
invalid config — retrying cannot help).
"""

from __future__ import annotations

from typing import Protocol

from apps.runtime.spec import NodeSpec, NodeStatus


class RuntimeError_(Exception):
    """Base class of driver errors."""


class TransientRuntimeError(RuntimeError_):
    """Retry later; the real state is unknown until observed again."""


class PermanentRuntimeError(RuntimeError_):
    """Retrying will not help."""


class RuntimeUnavailable(TransientRuntimeError):
    """The region's engine does not answer."""


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

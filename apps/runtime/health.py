"""Health probes of a node's published endpoint.

Only ever talks to the endpoint it is given (no proxies from the environment, no
redirects followed), with short per-request timeouts. Healthy means: ``/health``
answered 200 *and* proved it is the node we meant (``nodeapi.read_verified``: a reply
MAC of the node's credential and its node key's signature over our challenge). Whatever
else answers on the port — a leftover process, another installation's node — is not
healthy.
"""

from __future__ import annotations

import time
from typing import Any

from apps.runtime.base import TransientRuntimeError
from apps.runtime.nodeapi import NodeAuth, NodeCallError, NodeTimeout, NodeUnverified, read_verified

REQUEST_TIMEOUT = 1.0


def probe(endpoint: str, path: str, *, auth: NodeAuth, timeout: float = REQUEST_TIMEOUT) -> bool:
    """True if the endpoint answers 200 on ``path`` right now, as the node ``auth`` names."""
    try:
        return read_verified(endpoint, path, auth=auth, timeout=timeout).status == 200
    except NodeCallError:
        return False


def wait_healthy(endpoint: str, path: str, timeout: float, *, auth: NodeAuth, interval: float = 0.1) -> dict[str, Any]:
    """Poll until ``path`` answers 200 as the node ``auth`` names; return its JSON body.

    Raises TransientRuntimeError with the last error if ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    last_error = "no attempt made"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            reply = read_verified(endpoint, path, auth=auth, timeout=min(REQUEST_TIMEOUT, remaining))
        # Reasons without the endpoint: they end up in tenant-visible operation logs.
        except NodeUnverified:
            last_error = "what answers there cannot prove it is this node"
        except NodeTimeout:
            last_error = "no answer in time"
        except NodeCallError:
            last_error = "no connection"
        else:
            if reply.status == 200:
                return reply.body if isinstance(reply.body, dict) else {"body": reply.body}
            last_error = f"HTTP {reply.status}: {str(reply.body)[:200]}"
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
    raise TransientRuntimeError(f"node {auth.node_id} not healthy after {timeout:.1f}s; last error: {last_error}")

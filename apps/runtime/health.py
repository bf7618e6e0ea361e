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
from apps.runtime.nodeapi import NodeAuth, NodeCallError, NodeTimeout, NodeUnverified, read_chain, read_verified

REQUEST_TIMEOUT = 1.0


def probe(endpoint: str, path: str, *, auth: NodeAuth, timeout: float = REQUEST_TIMEOUT) -> bool:
    """True if the endpoint answers 200 on ``path`` right now, as the node ``auth`` names."""
    return health_and_chain(endpoint, path, auth=auth, timeout=timeout)[0]


def health_and_chain(
    endpoint: str, path: str, *, auth: NodeAuth, timeout: float = REQUEST_TIMEOUT, chain: bool = False
) -> tuple[bool, dict | None]:
    """(healthy, chain facts) of the node at ``endpoint``: healthy when ``path`` answers 200
    proving it is the node ``auth`` names (an impostor on its port is not). With ``chain``,
    the facts of a healthy node come from that answer (``chain_facts``), else from its
    ``/chain``; None when it does not give them."""
    try:
        reply = read_verified(endpoint, path, auth=auth, timeout=timeout)
    except NodeCallError:
        return False, None
    if reply.status != 200:
        return False, None
    if not chain:
        return True, None
    return True, chain_facts(reply.body) or read_chain(endpoint, auth=auth)


def chain_facts(health: object) -> dict | None:
    """The chain facts (height, head, proposer) a node's authenticated ``/health`` carries,
    as ``/chain`` gives them; None from a node that does not send them (an image from
    before they were added, another framework's health path): ask its ``/chain``."""
    if not isinstance(health, dict) or not isinstance(health.get("head_hash"), str) or "proposer" not in health:
        return None
    return {"height": health.get("height"), "head_hash": health["head_hash"], "proposer": health["proposer"]}


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

"""Thin HTTP adapter to a ledger node's API (docs/ledger-protocol.md, "Node HTTP API").

Like ``health``: only ever talks to the endpoint it is given (no proxies from the
environment, no redirects), with short timeouts, and classifies what goes wrong:

- ``NodeUnreachable`` — the connection was not established: the request never reached
  the node, so trying another node is safe;
- ``NodeTimeout`` — connected but no answer in time: the outcome is unknown;
- anything the node answered comes back as ``NodeReply`` (status + JSON body), whatever
  the status: mapping node errors is the caller's business.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

_local = threading.local()


class NodeCallError(Exception):
    """Base class: no usable reply from the node."""


class NodeUnreachable(NodeCallError):
    """No connection (refused, reset before sending, connect timeout)."""


class NodeTimeout(NodeCallError):
    """Connected, but no reply within the read timeout; the outcome is unknown."""


class RawJSON(bytes):
    """A node's JSON answer kept as bytes: nested deeper than Python's parser goes (a block
    committed before nodes refused deep transactions). The gateway relays it unparsed, so
    such a block stays readable."""


@dataclass(frozen=True)
class NodeReply:
    status: int
    body: Any  # parsed JSON, or {"error": "bad_reply", "detail": <text>} if not JSON

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _session() -> requests.Session:
    # One keep-alive session per thread: gateway requests reuse connections to nodes.
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.trust_env = False  # a node endpoint is never proxied
        _local.session = session
    return session


def path_segment(value: str | int) -> str:
    """One URL path segment, percent-encoded (keys may contain '/', '?', spaces…)."""
    return quote(str(value), safe="")


def node_call(
    endpoint: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    connect_timeout: float = 1.0,
    read_timeout: float = 5.0,
) -> NodeReply:
    url = endpoint.rstrip("/") + "/" + path.lstrip("/")
    data = None
    headers = {"Accept": "application/json"}
    if body is not None:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers["Content-Type"] = "application/json"
    try:
        response = _session().request(
            method, url, data=data, headers=headers, timeout=(connect_timeout, read_timeout), allow_redirects=False
        )
    except requests.ConnectTimeout as exc:
        raise NodeUnreachable(f"{endpoint}: connect timeout") from exc
    except requests.ConnectionError as exc:
        # Also a read that failed mid-way; for POST that is ambiguous, but requests only
        # raises ConnectionError for failures before a response began, which the node's
        # nonce makes safe to resend.
        raise NodeUnreachable(f"{endpoint}: {type(exc).__name__}") from exc
    except requests.Timeout as exc:
        raise NodeTimeout(f"{endpoint} did not answer within {read_timeout:g}s") from exc
    except requests.RequestException as exc:
        raise NodeUnreachable(f"{endpoint}: {type(exc).__name__}") from exc
    try:
        parsed = response.json()
    except RecursionError:
        parsed = RawJSON(response.content)
    except ValueError:
        parsed = {"error": "bad_reply", "detail": response.text[:200]}
    return NodeReply(status=response.status_code, body=parsed)


def read_chain(endpoint: str, *, timeout: float = 2.0) -> dict | None:
    """The node's ``/chain`` summary, or None if it does not answer with one."""
    try:
        reply = node_call(endpoint, "GET", "/chain", connect_timeout=min(timeout, 1.0), read_timeout=timeout)
    except NodeCallError:
        return None
    if reply.status != 200 or not isinstance(reply.body, dict):
        return None
    return reply.body

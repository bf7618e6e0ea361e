"""Thin HTTP adapter to a ledger node's API (docs/ledger-protocol.md, "Node HTTP API").

Like ``health``: only ever talks to the endpoint it is given (no proxies from the
environment, no redirects), with short timeouts, and classifies what goes wrong:

- ``NodeUnreachable`` — the connection was not established: the request never reached
  the node, so trying another node is safe;
- ``NodeUnverified`` (a ``NodeUnreachable``) — something answered, but not the node we
  meant: its reply carries no valid MAC of the node's credential (``bsn.ledger.auth``).
  Whatever it said is discarded: the same as no answer;
- ``NodeTimeout`` — connected but no answer in time: the outcome is unknown;
- anything the node answered and proved comes back as ``NodeReply`` (status + JSON body),
  whatever the status: mapping node errors is the caller's business.

Every request is signed with the node's own API credential (``NodeAuth``); the credential
itself never goes on the wire.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from bsn.ledger import auth as node_auth
from bsn.ledger.crypto import verify

_local = threading.local()


class NodeCallError(Exception):
    """Base class: no usable reply from the node. All are ``transient`` (apps.runtime.base.
    is_transient): another try, or another node, may answer."""

    transient = True


class NodeUnreachable(NodeCallError):
    """No connection (refused, reset before sending, connect timeout)."""


class NodeUnverified(NodeUnreachable):
    """An answer that does not prove it comes from the node we meant (an impostor on its port)."""


class NodeTimeout(NodeCallError):
    """Connected, but no reply within the read timeout; the outcome is unknown."""


class RawJSON(bytes):
    """A node's JSON answer kept as bytes: nested deeper than Python's parser goes (a block
    committed before nodes refused deep transactions). The gateway relays it unparsed, so
    such a block stays readable."""


@dataclass(frozen=True)
class NodeAuth:
    """Who we expect at an endpoint, and the credential shared with it."""

    key: bytes  # the node's API credential (HMAC key)
    app_id: str
    node_id: str
    public_key: str  # the node key's public part, as the control plane stored it

    def __repr__(self) -> str:
        return f"NodeAuth(app_id={self.app_id!r}, node_id={self.node_id!r})"


@dataclass(frozen=True)
class NodeReply:
    status: int
    body: Any  # parsed JSON, or {"error": "bad_reply", "detail": <text>} if not JSON
    nonce: str = ""  # our challenge in this request

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def new_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # a node endpoint is never proxied
    return session


def _session() -> requests.Session:
    # One keep-alive session per thread: gateway requests reuse connections to nodes.
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = new_session()
    return session


def path_segment(value: str | int) -> str:
    """One URL path segment, percent-encoded (keys may contain '/', '?', spaces…)."""
    return quote(str(value), safe="")


def identity_ok(body: Any, auth: NodeAuth, nonce: str) -> bool:
    """True when ``body["identity"]`` proves the node is ``auth.node_id`` of ``auth.app_id``:
    the ids match and the node key we stored signed our challenge."""
    identity = body.get("identity") if isinstance(body, dict) else None
    if not isinstance(identity, dict) or not nonce:
        return False
    if (
        identity.get("app_id") != auth.app_id
        or identity.get("node_id") != auth.node_id
        or identity.get("public_key") != auth.public_key
        or identity.get("challenge") != nonce
    ):
        return False
    signature = identity.get("signature")
    message = node_auth.identity_message(auth.app_id, auth.node_id, nonce)
    return isinstance(signature, str) and verify(auth.public_key, signature, message)


def node_call(
    endpoint: str,
    method: str,
    path: str,
    *,
    auth: NodeAuth,
    body: Any = None,
    connect_timeout: float = 1.0,
    read_timeout: float = 5.0,
    session: requests.Session | None = None,
    as_text: bool = False,
) -> NodeReply:
    """One signed call; ``as_text``: the body as text, not parsed (``/metrics`` is Prometheus text)."""
    url = endpoint.rstrip("/") + "/" + path.lstrip("/")
    data = None
    headers = {"Accept": "application/json"}
    if body is not None:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers["Content-Type"] = "application/json"
    session = session or _session()
    try:
        prepared = session.prepare_request(requests.Request(method, url, data=data, headers=headers))
        # Signed over exactly what goes on the wire (the prepared target and body).
        prepared.headers["Authorization"], nonce = node_auth.authorization(
            auth.key, method, prepared.path_url, prepared.body or b""
        )
        response = session.send(prepared, timeout=(connect_timeout, read_timeout), allow_redirects=False)
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
    raw = response.content
    mac = response.headers.get(node_auth.REPLY_HEADER)
    if not node_auth.check_reply(auth.key, nonce, response.status_code, raw, mac):
        raise NodeUnverified(
            f"{endpoint} answered HTTP {response.status_code} without proving it is node {auth.node_id}"
        )
    if as_text:
        return NodeReply(status=response.status_code, body=response.text, nonce=nonce)
    try:
        parsed = json.loads(raw)
    except RecursionError:
        parsed = RawJSON(raw)
    except ValueError:
        parsed = {"error": "bad_reply", "detail": response.text[:200]}
    return NodeReply(status=response.status_code, body=parsed, nonce=nonce)


def read_verified(
    endpoint: str, path: str, *, auth: NodeAuth, timeout: float = 2.0, session: requests.Session | None = None
) -> NodeReply:
    """GET ``/health`` or ``/chain``: the reply only if it also proves the node's identity
    (raises ``NodeUnverified`` otherwise)."""
    reply = node_call(
        endpoint, "GET", path, auth=auth, connect_timeout=min(timeout, 1.0), read_timeout=timeout, session=session
    )
    if not identity_ok(reply.body, auth, reply.nonce):
        raise NodeUnverified(f"{endpoint}{path}: the answer does not prove it is node {auth.node_id}")
    return reply


def read_chain(
    endpoint: str, *, auth: NodeAuth, timeout: float = 2.0, session: requests.Session | None = None
) -> dict | None:
    """The node's ``/chain`` summary, or None if it does not answer with one (or cannot
    prove it is the node we meant)."""
    try:
        reply = read_verified(endpoint, "/chain", auth=auth, timeout=timeout, session=session)
    except NodeCallError:
        return None
    if reply.status != 200 or not isinstance(reply.body, dict):
        return None
    return reply.body

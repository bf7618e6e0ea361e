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

import http.client
import json
import os
import select
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from bsn.ledger import auth as node_auth
from bsn.ledger.claim import STANDING_BY
from bsn.ledger.crypto import verify


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


class _Connections:
    """Idle keep-alive connections to node endpoints, shared by the process's threads.

    Written on the standard library's ``http.client`` rather than requests: a node call is
    a small signed GET or POST to one known endpoint, and requests' per-call machinery
    (sessions, hooks, cookies, URL re-quoting) cost 0.9 ms of CPU a call on this machine,
    twice the call itself (issue 9: the reconcile pass over 200 nodes is 200 such calls).
    A connection is taken by one call at a time and given back after a complete reply, so
    the next call to that node (the next reconcile pass, the gateway's next request) skips
    the connect and the node keeps its handler thread. The node closes a connection idle
    for 60 s (``bsn.ledger.server``); one it closed is noticed before reuse (readable with
    nothing asked: EOF) and dropped.
    """

    PER_ENDPOINT = 4  # idle connections kept to one node
    TOTAL = 512  # idle connections kept in all (the least recently used node's go first)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: OrderedDict[tuple[str, int], list[http.client.HTTPConnection]] = OrderedDict()
        self._count = 0

    def take(self, host: str, port: int) -> http.client.HTTPConnection | None:
        """An idle connection to the node that is still open, or None."""
        while True:
            with self._lock:
                idle = self._idle.get((host, port))
                if not idle:
                    return None
                conn = idle.pop()
                self._count -= 1
                if not idle:
                    del self._idle[(host, port)]
            if conn.sock is not None and not _readable(conn.sock):
                return conn
            conn.close()

    def give(self, host: str, port: int, conn: http.client.HTTPConnection) -> None:
        evicted = []
        with self._lock:
            idle = self._idle.setdefault((host, port), [])
            self._idle.move_to_end((host, port))
            if len(idle) >= self.PER_ENDPOINT:
                evicted.append(conn)
            else:
                idle.append(conn)
                self._count += 1
            while self._count > self.TOTAL:
                key, oldest = next(iter(self._idle.items()))
                evicted.append(oldest.pop(0))
                self._count -= 1
                if not oldest:
                    del self._idle[key]
        for conn in evicted:
            conn.close()

    def clear(self) -> None:
        """Close every idle connection. In a forked child (they came from the parent) this
        only closes the child's copies: the parent's connections stay open."""
        with self._lock:
            conns = [conn for idle in self._idle.values() for conn in idle]
            self._idle.clear()
            self._count = 0
        for conn in conns:
            conn.close()


def _readable(sock) -> bool:
    """True if the socket has something to read or is closed: an idle keep-alive
    connection that is readable was closed by the node (or carries what nobody asked for)."""
    poller = select.poll()  # not select(): a worker may hold more than 1,024 descriptors
    poller.register(sock, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


_connections = _Connections()
os.register_at_fork(after_in_child=_connections.clear)

# Failures of a reused connection before any reply: the node closed it as we sent. The
# request did not reach the node; it is sent once more on a new connection.
_STALE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, http.client.RemoteDisconnected)

# A warm node's claim: tries when the connection is reset or refused before an answer, and
# the pause between (claim_warm_node).
CLAIM_ATTEMPTS = 2
CLAIM_RETRY_S = 0.05


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


def _target(endpoint: str) -> tuple[str, int, str]:
    """(host, port, base path) of an ``http://host:port[/base]`` endpoint."""
    parts = urlsplit(endpoint)
    if parts.scheme != "http" or not parts.hostname:
        raise NodeUnreachable(f"{endpoint}: not an http:// endpoint")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


def _exchange(
    endpoint: str,
    host: str,
    port: int,
    method: str,
    path: str,
    data: bytes | None,
    headers: dict,
    timeouts: tuple[float, float],
) -> tuple[int, bytes, str | None]:
    """Send one request to ``host``:``port`` (``endpoint``'s, parsed by the caller) on a kept
    or new connection: (status, body, reply MAC header)."""
    connect_timeout, read_timeout = timeouts
    conn = _connections.take(host, port)
    reused = conn is not None
    while True:
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=connect_timeout)
            try:
                conn.connect()
            except TimeoutError as exc:
                conn.close()
                raise NodeUnreachable(f"{endpoint}: connect timeout") from exc
            except OSError as exc:
                conn.close()
                raise NodeUnreachable(f"{endpoint}: {type(exc).__name__}") from exc
        try:
            conn.sock.settimeout(read_timeout)
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except _STALE as exc:
            conn.close()
            if reused:  # the node had closed it: the request never reached it (same nonce)
                conn, reused = None, False
                continue
            raise NodeUnreachable(f"{endpoint}: {type(exc).__name__}") from exc
        except TimeoutError as exc:
            conn.close()
            raise NodeTimeout(f"{endpoint} did not answer within {read_timeout:g}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            # Also a reply cut off mid-way; the caller's next try carries a new nonce.
            conn.close()
            raise NodeUnreachable(f"{endpoint}: {type(exc).__name__}") from exc
        if response.will_close:
            conn.close()
        else:
            _connections.give(host, port, conn)
        return response.status, raw, response.getheader(node_auth.REPLY_HEADER)


def node_call(
    endpoint: str,
    method: str,
    path: str,
    *,
    auth: NodeAuth,
    body: Any = None,
    connect_timeout: float = 1.0,
    read_timeout: float = 5.0,
    as_text: bool = False,
) -> NodeReply:
    """One signed call; ``as_text``: the body as text, not parsed (``/metrics`` is Prometheus text)."""
    host, port, base = _target(endpoint)
    target = base + "/" + path.lstrip("/")
    data = None
    headers = {"Accept": "application/json"}
    if body is not None:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers["Content-Type"] = "application/json"
    # Signed over exactly what goes on the wire (the request target and body).
    headers["Authorization"], nonce = node_auth.authorization(auth.key, method, target, data or b"")
    status, raw, mac = _exchange(endpoint, host, port, method, target, data, headers, (connect_timeout, read_timeout))
    if not node_auth.check_reply(auth.key, nonce, status, raw, mac):
        raise NodeUnverified(f"{endpoint} answered HTTP {status} without proving it is node {auth.node_id}")
    if as_text:
        return NodeReply(status=status, body=raw.decode("utf-8", "replace"), nonce=nonce)
    try:
        parsed = json.loads(raw)
    except RecursionError:
        parsed = RawJSON(raw)
    except ValueError:
        parsed = {"error": "bad_reply", "detail": raw[:200].decode("utf-8", "replace")}
    return NodeReply(status=status, body=parsed, nonce=nonce)


def claim_warm_node(endpoint: str, sealed: bytes, *, timeout: float = 3.0) -> int:
    """``POST /claim`` a sealed claim to a warm node standing by (bsn/ledger/claim.py): the
    HTTP status (200: taken; 403: not sealed with its key; 409: claimed already — by an
    earlier try whose answer was lost, when the claim is sealed with the node's own key).
    Not signed: the seal is the proof, and it is the node's key that opens it. A connection
    reset or refused before an answer (the engine's port proxy, a node between its accept
    loops) is tried once more after ``CLAIM_RETRY_S``. NodeCallError when no answer came
    (then whether it was taken is unknown: the caller's fallback tells)."""
    host, port, base = _target(endpoint)
    headers = {"Content-Type": "application/octet-stream", "Connection": "close"}

    def post() -> int:
        status, _, _ = _exchange(
            endpoint, host, port, "POST", f"{base}/claim", sealed, headers, (min(timeout, 1.0), timeout)
        )
        return status

    for _ in range(CLAIM_ATTEMPTS - 1):
        try:
            return post()
        except NodeUnreachable:
            time.sleep(CLAIM_RETRY_S)
    return post()  # the last try: what it raises is the caller's


def standing_by(endpoint: str, *, timeout: float = 1.0) -> bool:
    """Does a warm node listen for its claim at ``endpoint`` (``404 standing_by``)?"""
    host, port, base = _target(endpoint)
    try:
        status, raw, _ = _exchange(endpoint, host, port, "GET", f"{base}/health", None, {}, (timeout, timeout))
    except NodeCallError:
        return False
    try:
        return status == 404 and json.loads(raw).get("error") == STANDING_BY["error"]
    except (ValueError, AttributeError):
        return False


def read_verified(endpoint: str, path: str, *, auth: NodeAuth, timeout: float = 2.0) -> NodeReply:
    """GET ``/health`` or ``/chain``: the reply only if it also proves the node's identity
    (raises ``NodeUnverified`` otherwise)."""
    reply = node_call(endpoint, "GET", path, auth=auth, connect_timeout=min(timeout, 1.0), read_timeout=timeout)
    if not identity_ok(reply.body, auth, reply.nonce):
        raise NodeUnverified(f"{endpoint}{path}: the answer does not prove it is node {auth.node_id}")
    return reply


def read_chain(endpoint: str, *, auth: NodeAuth, timeout: float = 2.0) -> dict | None:
    """The node's ``/chain`` summary, or None if it does not answer with one (or cannot
    prove it is the node we meant)."""
    try:
        reply = read_verified(endpoint, "/chain", auth=auth, timeout=timeout)
    except NodeCallError:
        return None
    if reply.status != 200 or not isinstance(reply.body, dict):
        return None
    return reply.body

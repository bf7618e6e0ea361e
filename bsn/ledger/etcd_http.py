"""A small client for etcd v3's JSON gateway (``/v3/...``), standard library only.

Used inside ledger nodes (no Django there) and by the control plane (apps/ordering).

- Several endpoints: a connection error, a timeout or an "unavailable" answer (no
  leader, request timed out) moves on to the next endpoint; after a full round the call
  raises :class:`EtcdUnavailable`. A retried call may have been applied once already, so
  callers send requests whose repetition is harmless (puts of the same value,
  compare-and-swap transactions, deletes).
- Authentication: with a user, a token is obtained from ``/v3/auth/authenticate`` (or
  handed over: ``token``) and sent as the ``Authorization`` header; "invalid auth token"
  (a member restarted, the token expired) fetches a new one and retries once.
- Keys and values are bytes on the wire (base64 in JSON); this module takes ``str`` or
  ``bytes`` and returns :class:`KeyValue` with bytes. int64 fields arrive as JSON
  strings and are returned as ``int``.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0

# gRPC status codes the gateway reports in {"code": n}.
GRPC_INVALID_ARGUMENT = 3
GRPC_DEADLINE_EXCEEDED = 4
GRPC_FAILED_PRECONDITION = 9
GRPC_PERMISSION_DENIED = 7
GRPC_UNAVAILABLE = 14
GRPC_UNAUTHENTICATED = 16

_UNAVAILABLE_MESSAGES = (
    "no leader",
    "leader changed",
    "request timed out",
    "not capable",
    "too many requests",
    "server stopped",
    "timed out waiting for read index",
)
_AUTH_MESSAGES = (
    "permission denied",
    "authentication failed",
    "user name is empty",
    "user name not found",
    "invalid auth management",
    "authentication is not enabled",
)


class EtcdError(Exception):
    """etcd refused a request (bad argument, missing user, …).

    ``transient``: the one flag retry logic reads, shared by every adapter's errors
    (apps.runtime.base.is_transient): True when trying again later may succeed."""

    transient = False

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class EtcdUnavailable(EtcdError):
    """No endpoint answered usefully; the outcome of the last request is unknown."""

    transient = True


class EtcdAuthError(EtcdError):
    """Wrong credentials, or the user may not touch those keys (permission denied)."""


class EtcdCompacted(EtcdError):
    """A watch asked for revisions that were compacted away; re-read and watch again."""

    transient = True

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (oldest kept: {compact_revision})")
        self.compact_revision = compact_revision


# ------------------------------------------------------------------------- encoding


def _b(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def b64(value: str | bytes) -> str:
    return base64.b64encode(_b(value)).decode("ascii")


def unb64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def prefix_end(prefix: str | bytes) -> bytes:
    """The range_end that selects every key starting with ``prefix`` (etcd's rule)."""
    raw = bytearray(_b(prefix))
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"  # all keys


def _int(value: Any) -> int:
    return int(value) if value not in (None, "") else 0


class KeyValue:
    """One key as etcd returned it. The value is base64-decoded on first use: a watcher
    skips most values it receives (its own pending batches, blocks it already has)."""

    __slots__ = ("_raw", "_value", "create_revision", "key", "lease", "mod_revision", "version")

    def __init__(
        self,
        key: bytes,
        value: bytes | None = None,
        create_revision: int = 0,
        mod_revision: int = 0,
        version: int = 0,
        lease: int = 0,
        *,
        raw_value: str | None = None,
    ) -> None:
        self.key = key
        self._value = value
        self._raw = raw_value
        self.create_revision = create_revision
        self.mod_revision = mod_revision
        self.version = version
        self.lease = lease

    @property
    def value(self) -> bytes:
        if self._value is None:
            self._value = unb64(self._raw)
        return self._value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyValue):
            return NotImplemented
        return (self.key, self.value, self.create_revision, self.mod_revision, self.version, self.lease) == (
            other.key,
            other.value,
            other.create_revision,
            other.mod_revision,
            other.version,
            other.lease,
        )

    def __repr__(self) -> str:
        return f"KeyValue(key={self.key!r}, mod_revision={self.mod_revision})"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyValue:
        return cls(
            key=unb64(data.get("key")),
            raw_value=data.get("value") or "",
            create_revision=_int(data.get("create_revision")),
            mod_revision=_int(data.get("mod_revision")),
            version=_int(data.get("version")),
            lease=_int(data.get("lease")),
        )


@dataclass(frozen=True)
class RangeResult:
    """kvs plus the store revision the read was served at."""

    kvs: list[KeyValue]
    revision: int
    count: int
    more: bool


@dataclass(frozen=True)
class WatchEvent:
    type: str  # "PUT" | "DELETE"
    kv: KeyValue


# ------------------------------------------------------------ transaction builders
# Compare: target CREATE/MOD/VERSION/VALUE/LEASE, result EQUAL/GREATER/LESS/NOT_EQUAL.

_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}


def compare(key: str | bytes, target: str, op: str, value: int | str | bytes) -> dict[str, Any]:
    target = target.upper()
    field = {
        "CREATE": "create_revision",
        "MOD": "mod_revision",
        "VERSION": "version",
        "VALUE": "value",
        "LEASE": "lease",
    }[target]
    encoded = b64(value) if target == "VALUE" else str(int(value))  # type: ignore[arg-type]
    return {"key": b64(key), "target": target, "result": _RESULTS[op], field: encoded}


def op_put(key: str | bytes, value: str | bytes, *, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def op_delete(key: str | bytes, range_end: str | bytes | None = None) -> dict[str, Any]:
    body = {"key": b64(key)}
    if range_end is not None:
        body["range_end"] = b64(range_end)
    return {"request_delete_range": body}


def op_range(
    key: str | bytes, range_end: str | bytes | None = None, *, limit: int = 0, keys_only: bool = False
) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key)}
    if range_end is not None:
        body["range_end"] = b64(range_end)
    if limit:
        body["limit"] = str(limit)
    if keys_only:
        body["keys_only"] = True
    return {"request_range": body}


# --------------------------------------------------------------------------- client


def _split(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if parts.scheme != "http":
        raise ValueError(f"etcd endpoint {endpoint!r}: only http:// is supported")
    if not parts.hostname:
        raise ValueError(f"etcd endpoint {endpoint!r} has no host")
    return parts.hostname, parts.port or 2379


class EtcdClient:
    """Thread-safe; one keep-alive connection per endpoint per thread."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        user: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        token: str | None = None,
    ) -> None:
        """``token``: one got for ``user`` already (handed over); used until etcd refuses it."""
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        self.endpoints = [e.strip().rstrip("/") for e in endpoints]
        if not self.endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        for endpoint in self.endpoints:
            _split(endpoint)
        self.user = user or None
        self.password = password or ""
        self.timeout = timeout
        self._token: str | None = (token or None) if user else None
        self._token_lock = threading.Lock()
        self._preferred = 0  # index of the endpoint that answered last
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"EtcdClient({self.endpoints!r}, user={self.user!r})"

    # -- transport

    def _conn(self, endpoint: str, timeout: float) -> http.client.HTTPConnection:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        conn = pool.get(endpoint)
        if conn is None:
            host, port = _split(endpoint)
            conn = pool[endpoint] = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _drop(self, endpoint: str) -> None:
        pool = getattr(self._local, "pool", {})
        conn = pool.pop(endpoint, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for endpoint in list(getattr(self._local, "pool", {})):
            self._drop(endpoint)

    def _order(self) -> list[str]:
        start = self._preferred % len(self.endpoints)
        return self.endpoints[start:] + self.endpoints[:start]

    def _post_once(self, endpoint: str, path: str, body: dict, token: str | None, timeout: float) -> tuple[int, bytes]:
        payload = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        for attempt in (0, 1):
            conn = self._conn(endpoint, timeout)
            reused = conn.sock is not None
            try:
                conn.request("POST", path, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self._drop(endpoint)
                return resp.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop(endpoint)
                if attempt == 0 and reused:
                    continue  # the server closed an idle keep-alive connection: once more, fresh
                raise
            except BaseException:
                self._drop(endpoint)
                raise
        raise AssertionError("unreachable")

    def call(self, path: str, body: dict, *, auth: bool = True, timeout: float | None = None) -> dict:
        """POST ``body`` to ``path`` on the first endpoint that answers; the decoded reply."""
        timeout = self.timeout if timeout is None else timeout
        token = self._ensure_token() if auth else None
        refreshed = False
        while True:
            try:
                return self._call_endpoints(path, body, token, timeout)
            except EtcdAuthError as exc:
                if auth and self.user and not refreshed and exc.code == GRPC_UNAUTHENTICATED:
                    token = self._ensure_token(stale=token)
                    refreshed = True
                    continue
                raise

    def _call_endpoints(self, path: str, body: dict, token: str | None, timeout: float) -> dict:
        errors = []
        for endpoint in self._order():
            try:
                status, data = self._post_once(endpoint, path, body, token, timeout)
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, DNS
                errors.append(f"{endpoint}: {exc.__class__.__name__}: {exc}")
                continue
            try:
                reply = json.loads(data or b"{}")
            except ValueError:
                if 400 <= status < 500:  # e.g. 404: this etcd has no such call
                    raise EtcdError(f"{endpoint}{path}: HTTP {status} {data[:200]!r}", status=status) from None
                errors.append(f"{endpoint}: HTTP {status}, not JSON: {data[:200]!r}")
                continue
            if status == 200 and "error" not in reply:
                self._preferred = self.endpoints.index(endpoint)
                return reply
            exc = error_from_reply(reply, status)
            if isinstance(exc, EtcdUnavailable):
                errors.append(f"{endpoint}: {exc}")
                continue
            raise exc
        raise EtcdUnavailable("no etcd endpoint answered: " + "; ".join(errors))

    # -- auth

    def _ensure_token(self, stale: str | None = None) -> str | None:
        if not self.user:
            return None
        with self._token_lock:
            if self._token is None or self._token == stale:
                reply = self._call_endpoints(
                    "/v3/auth/authenticate", {"name": self.user, "password": self.password}, None, self.timeout
                )
                self._token = reply.get("token") or None
                if not self._token:
                    raise EtcdAuthError("etcd returned no token (is auth enabled?)")
            return self._token

    def invalidate_token(self) -> None:
        """Forget the token (a watch reported it invalid); the next call fetches a new one."""
        with self._token_lock:
            self._token = None

    def authenticate(self) -> str:
        """A fresh token for the configured user (checks the credentials)."""
        token = self._ensure_token(stale=self._token)
        if token is None:
            raise EtcdAuthError("no user configured")
        return token

    # -- KV

    def range(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        limit: int = 0,
        revision: int = 0,
        sort_order: str | None = None,
        sort_target: str | None = None,
        keys_only: bool = False,
        count_only: bool = False,
        serializable: bool = False,
    ) -> RangeResult:
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            range_end = prefix_end(key)
        if range_end is not None:
            body["range_end"] = b64(range_end)
        if limit:
            body["limit"] = str(limit)
        if revision:
            body["revision"] = str(revision)
        if sort_order:
            body["sort_order"] = sort_order.upper()  # ASCEND | DESCEND
            body["sort_target"] = (sort_target or "KEY").upper()  # KEY | VERSION | CREATE | MOD | VALUE
        if keys_only:
            body["keys_only"] = True
        if count_only:
            body["count_only"] = True
        if serializable:
            body["serializable"] = True
        reply = self.call("/v3/kv/range", body)
        return RangeResult(
            kvs=[KeyValue.from_json(kv) for kv in reply.get("kvs", [])],
            revision=_int((reply.get("header") or {}).get("revision")),
            count=_int(reply.get("count")),
            more=bool(reply.get("more")),
        )

    def get(self, key: str | bytes) -> KeyValue | None:
        kvs = self.range(key).kvs
        return kvs[0] if kvs else None

    def put(self, key: str | bytes, value: str | bytes, *, lease: int = 0) -> int:
        """Store ``value``; the new store revision."""
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        reply = self.call("/v3/kv/put", body)
        return _int((reply.get("header") or {}).get("revision"))

    def delete(self, key: str | bytes, range_end: str | bytes | None = None, *, prefix: bool = False) -> int:
        """Delete a key (or a range / prefix); how many keys went."""
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            range_end = prefix_end(key)
        if range_end is not None:
            body["range_end"] = b64(range_end)
        return _int(self.call("/v3/kv/deleterange", body).get("deleted"))

    def txn(
        self,
        compares: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
    ) -> tuple[bool, dict[str, Any]]:
        """(succeeded, raw reply). Build the parts with compare(), op_put(), op_delete(), op_range()."""
        reply = self.call("/v3/kv/txn", {"compare": compares, "success": success, "failure": failure or []})
        return bool(reply.get("succeeded")), reply

    @staticmethod
    def txn_range_kvs(reply: dict[str, Any], index: int = 0) -> list[KeyValue]:
        """The kvs of the ``index``-th range response inside a txn reply."""
        responses = reply.get("responses") or []
        if index >= len(responses):
            return []
        inner = responses[index].get("response_range") or {}
        return [KeyValue.from_json(kv) for kv in inner.get("kvs", [])]

    # -- leases

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        """(lease id, granted ttl)."""
        reply = self.call("/v3/lease/grant", {"TTL": str(ttl)})
        if reply.get("error"):
            raise EtcdError(str(reply["error"]))
        return _int(reply.get("ID")), _int(reply.get("TTL"))

    def lease_keepalive(self, lease_id: int) -> int:
        """Refresh a lease; its remaining TTL, 0 if it is gone (expired or revoked)."""
        reply = self.call("/v3/lease/keepalive", {"ID": str(lease_id)})
        result = reply.get("result") or reply
        return _int(result.get("TTL"))

    def lease_revoke(self, lease_id: int) -> None:
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease_id)})
        except EtcdError as exc:
            if "lease not found" not in str(exc):
                raise

    # -- watch

    def watch(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        read_timeout: float = 5.0,
    ) -> Watch:
        """A streaming watch; iterate it for event batches, close() it from any thread."""
        if prefix:
            range_end = prefix_end(key)
        create: dict[str, Any] = {"key": b64(key)}
        if range_end is not None:
            create["range_end"] = b64(range_end)
        if start_revision:
            create["start_revision"] = str(start_revision)
        return Watch(self, {"create_request": create}, read_timeout)

    # -- auth administration (root only)

    def user_add(self, name: str, password: str) -> bool:
        """Create the user; False if it existed already (its password is left as it was)."""
        try:
            self.call("/v3/auth/user/add", {"name": name, "password": password})
        except EtcdError as exc:
            if "already exists" not in str(exc):
                raise
            return False
        return True

    def user_change_password(self, name: str, password: str) -> None:
        self.call("/v3/auth/user/changepw", {"name": name, "password": password})

    def user_delete(self, name: str) -> None:
        self._ignore_missing(lambda: self.call("/v3/auth/user/delete", {"name": name}))

    def user_get(self, name: str) -> list[str] | None:
        """The user's roles, None if there is no such user."""
        try:
            return list(self.call("/v3/auth/user/get", {"name": name}).get("roles", []))
        except EtcdError as exc:
            if "not found" in str(exc):
                return None
            raise

    def role_add(self, name: str) -> None:
        self._ignore_exists(lambda: self.call("/v3/auth/role/add", {"name": name}))

    def role_delete(self, name: str) -> None:
        self._ignore_missing(lambda: self.call("/v3/auth/role/delete", {"name": name}))

    def role_grant_permission(
        self, role: str, key: str | bytes, range_end: str | bytes | None = None, perm: str = "READWRITE"
    ) -> None:
        perm_body: dict[str, Any] = {"permType": perm.upper(), "key": b64(key)}
        if range_end is not None:
            perm_body["range_end"] = b64(range_end)
        self.call("/v3/auth/role/grant", {"name": role, "perm": perm_body})

    def user_grant_role(self, user: str, role: str) -> None:
        self.call("/v3/auth/user/grant", {"user": user, "role": role})

    def auth_enable(self) -> None:
        try:
            self.call("/v3/auth/enable", {}, auth=False)
        except EtcdError as exc:
            # Already enabled: without a token the gateway says "user name is empty".
            if "user name is empty" not in str(exc) and "already" not in str(exc):
                raise

    def auth_status(self) -> bool | None:
        """True/False when etcd says; None on members too old to tell (3.4 has no auth/status)."""
        try:
            reply = self.call("/v3/auth/status", {}, auth=False)
        except EtcdError as exc:
            if exc.status == 404 or exc.code == 12:
                return None
            raise
        return bool(reply.get("enabled"))

    def member_list(self) -> list[dict[str, Any]]:
        return list(self.call("/v3/cluster/member/list", {}).get("members", []))

    def member_remove(self, member_id: int) -> None:
        """Remove a member from the cluster (root only); a member already gone is fine."""
        self._ignore_missing(lambda: self.call("/v3/cluster/member/remove", {"ID": str(member_id)}))

    def member_add(self, peer_urls: list[str]) -> dict[str, Any]:
        """Announce a new member (root only); it must then start with --initial-cluster-state=existing."""
        return dict(self.call("/v3/cluster/member/add", {"peerURLs": list(peer_urls)}).get("member") or {})

    def member_update(self, member_id: int, peer_urls: list[str]) -> None:
        """Change the peer URLs a member is reached at (root only)."""
        self.call("/v3/cluster/member/update", {"ID": str(member_id), "peerURLs": list(peer_urls)})

    def status(self, endpoint: str, *, timeout: float | None = None) -> dict[str, Any]:
        """/v3/maintenance/status of one endpoint (no failover): leader, raft index, db size."""
        status, data = self._post_once(endpoint, "/v3/maintenance/status", {}, None, timeout or self.timeout)
        reply = json.loads(data or b"{}")
        if status != 200 or "error" in reply:
            raise error_from_reply(reply, status)
        return reply

    @staticmethod
    def _ignore_exists(fn: Any) -> None:
        try:
            fn()
        except EtcdError as exc:
            if "already exists" not in str(exc):
                raise

    @staticmethod
    def _ignore_missing(fn: Any) -> None:
        try:
            fn()
        except EtcdError as exc:
            if "not found" not in str(exc):
                raise


def error_from_reply(reply: dict[str, Any], status: int | None) -> EtcdError:
    """Classify a gateway error body {"error", "message", "code"}."""
    err = reply.get("error")
    if isinstance(err, dict):  # errors inside a stream: {"error": {"grpc_code", "message", ...}}
        code = err.get("grpc_code", err.get("code"))
        message = err.get("message") or json.dumps(err)
    else:
        code = reply.get("code")
        message = reply.get("message") or str(err or reply)
    code = int(code) if isinstance(code, int | str) and str(code).isdigit() else None
    text = message.lower()
    if code == GRPC_UNAUTHENTICATED or "invalid auth token" in text:
        return EtcdAuthError(message, code=GRPC_UNAUTHENTICATED, status=status)
    if code == GRPC_PERMISSION_DENIED or any(m in text for m in _AUTH_MESSAGES):
        return EtcdAuthError(message, code=code, status=status)
    if code in (GRPC_UNAVAILABLE, GRPC_DEADLINE_EXCEEDED) or any(m in text for m in _UNAVAILABLE_MESSAGES):
        return EtcdUnavailable(message, code=code, status=status)
    if status is not None and status >= 500 and code is None:
        return EtcdUnavailable(f"HTTP {status}: {message}", status=status)
    return EtcdError(message, code=code, status=status)


class Watch:
    """One streaming ``/v3/watch`` request on its own connection.

    Iterating yields lists of :class:`WatchEvent`. It ends (StopIteration) when the
    server closes the stream or :meth:`close` is called; raises :class:`EtcdCompacted`
    when the start revision is gone, :class:`EtcdUnavailable` when no endpoint accepts
    the watch or nothing (not even a progress note) arrives within ``read_timeout`` —
    the caller re-reads with a range and watches again from the new revision.
    """

    def __init__(self, client: EtcdClient, request: dict[str, Any], read_timeout: float) -> None:
        self.client = client
        self.request = request
        self.read_timeout = read_timeout
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._closed = False
        self.watch_id: int | None = None
        self.endpoint: str | None = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # unblocks a reader in another thread
            except OSError:
                pass
        if conn is not None:
            conn.close()

    def _open(self) -> None:
        token = self.client._ensure_token()
        errors: list[str] = []
        endpoints = self.client._order()
        refreshed = False
        i = 0
        while i < len(endpoints):
            endpoint = endpoints[i]
            i += 1
            host, port = _split(endpoint)
            conn = http.client.HTTPConnection(host, port, timeout=self.client.timeout)
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = token
            try:
                conn.request("POST", "/v3/watch", body=json.dumps(self.request).encode(), headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                errors.append(f"{endpoint}: {exc}")
                continue
            if resp.status != 200:
                data = resp.read()
                conn.close()
                try:
                    err = error_from_reply(json.loads(data or b"{}"), resp.status)
                except ValueError:
                    err = EtcdUnavailable(f"HTTP {resp.status}")
                if isinstance(err, EtcdUnavailable):
                    errors.append(f"{endpoint}: {err}")
                    continue
                if isinstance(err, EtcdAuthError) and err.code == GRPC_UNAUTHENTICATED and not refreshed:
                    token, refreshed = self.client._ensure_token(stale=token), True
                    i -= 1  # same endpoint, new token
                    continue
                raise err
            if conn.sock is not None:
                conn.sock.settimeout(self.read_timeout)
            self._conn, self._resp, self.endpoint = conn, resp, endpoint
            if self._closed:  # closed while opening
                self.close()
            return
        raise EtcdUnavailable("no etcd endpoint accepted the watch: " + "; ".join(errors))

    def _messages(self) -> Iterator[dict[str, Any]]:
        """The stream's JSON messages. etcd's gateway ends each message with a newline, so
        a message is parsed once, when its newline has arrived: a block's event is
        hundreds of KiB and may arrive in many reads, and parsing the whole buffer after
        each read scanned and copied it again every time (linear now; on loopback the
        reads were large enough that it made no measurable difference)."""
        assert self._resp is not None
        pending = bytearray()
        while not self._closed:
            try:
                chunk = self._resp.read1(262144)
            except Exception as exc:  # noqa: BLE001 - close() from another thread breaks http.client oddly
                if self._closed:
                    return
                if isinstance(exc, TimeoutError):
                    raise EtcdUnavailable(f"watch on {self.endpoint}: nothing within {self.read_timeout}s") from None
                raise EtcdUnavailable(f"watch on {self.endpoint} broke: {exc!r}") from None
            if not chunk:
                if pending.strip():
                    yield self._parse(bytes(pending))
                return
            searched = len(pending)  # what was there already holds no newline
            pending += chunk
            end = pending.find(b"\n", searched)
            while end >= 0:
                line = bytes(pending[:end])
                del pending[: end + 1]
                if line.strip():
                    yield self._parse(line)
                end = pending.find(b"\n")

    def _parse(self, line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line)
        except ValueError:
            raise EtcdUnavailable(f"watch on {self.endpoint}: a message that is not JSON") from None
        if not isinstance(message, dict):
            raise EtcdUnavailable(f"watch on {self.endpoint}: a message that is not a JSON object")
        return message

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        if self._closed:
            return
        self._open()
        for message in self._messages():
            if "error" in message:
                raise error_from_reply(message, None)
            result = message.get("result") or {}
            if result.get("compact_revision") and _int(result["compact_revision"]):
                raise EtcdCompacted(_int(result["compact_revision"]))
            if result.get("created"):
                self.watch_id = _int(result.get("watch_id"))
            if result.get("canceled"):
                reason = result.get("cancel_reason") or "watch cancelled by the server"
                err = error_from_reply({"message": reason}, None)
                raise err if isinstance(err, EtcdAuthError) else EtcdUnavailable(reason)
            events = [
                WatchEvent(type=ev.get("type") or "PUT", kv=KeyValue.from_json(ev.get("kv") or {}))
                for ev in result.get("events") or []
            ]
            if events:
                yield events
        if not self._closed:
            raise EtcdUnavailable(f"watch on {self.endpoint} ended by the server")


def wait_ready(client: EtcdClient, timeout: float, *, interval: float = 0.1) -> None:
    """Block until a linearizable read succeeds (a leader exists) or raise EtcdUnavailable."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.call("/v3/kv/range", {"key": b64("/bsn/health-probe"), "count_only": True})
            return
        except EtcdAuthError:
            return  # a member that checks credentials is serving
        except EtcdError as exc:
            last = exc
        time.sleep(interval)
    raise EtcdUnavailable(f"etcd not ready within {timeout}s: {last}")

"""The node's HTTP JSON API (stdlib ``http.server``, one thread per connection)."""

from __future__ import annotations

import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from bsn.ledger import __version__
from bsn.ledger.contracts.kv import ContractError
from bsn.ledger.node import LedgerNode
from bsn.ledger.store import StoreError

MAX_BODY = 1024 * 1024  # bytes
MAX_DRAIN = 8 * MAX_BODY  # a body up to this size is read and dropped before the 400
KV_PREFIX = "/kv/"
_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS")


class HTTPError(Exception):
    """Ends a request with a JSON ``{"error": ...}`` reply."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the node; every reply, errors included, is JSON."""

    protocol_version = "HTTP/1.1"  # keep-alive for clients such as the gateway
    server_version = f"bsn-ledger/{__version__}"
    timeout = 60  # idle keep-alive connections give their thread back
    server: LedgerHTTPServer

    # Dispatch.

    def _handle(self) -> None:
        try:
            status, body = self._route()
        except HTTPError as exc:
            status, body = exc.status, {"error": exc.message}
            self._send(status, body, exc.headers)
            return
        except StoreError as exc:
            status, body = HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"storage failure: {exc}"}
        except Exception as exc:  # noqa: BLE001 - a bug: answer 500 and keep serving
            self.log_error("unhandled error: %r", exc)
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"}
        self._send(status, body)

    def _route(self) -> tuple[int, Any]:
        node = self.server.node
        method = self.command
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if path == "/health":
            self._allow(method, "GET")
            if not node.healthy:
                return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "error", "error": node.log.failed}
            return HTTPStatus.OK, {"status": "ok", "node_id": node.config.node_id, "app_id": node.config.app_id}
        if path == "/info":
            self._allow(method, "GET")
            return HTTPStatus.OK, node.info()
        if path.startswith(KV_PREFIX):
            self._allow(method, "GET", "PUT", "DELETE")
            key = unquote(path[len(KV_PREFIX) :], errors="strict")
            try:
                if method == "GET":
                    try:
                        return HTTPStatus.OK, {"key": key, "value": node.kv_get(key)}
                    except KeyError:
                        raise HTTPError(HTTPStatus.NOT_FOUND, "key not found") from None
                if method == "PUT":
                    value = self._value()
                    node.kv_put(key, value)
                    return HTTPStatus.OK, {"key": key, "value": value}
                if not node.kv_delete(key):
                    raise HTTPError(HTTPStatus.NOT_FOUND, "key not found")
                return HTTPStatus.OK, {"key": key, "deleted": True}
            except ContractError as exc:
                raise HTTPError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        raise HTTPError(HTTPStatus.NOT_FOUND, "not found")

    def _allow(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            raise HTTPError(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed", {"Allow": ", ".join(allowed)})

    # Input.

    def _value(self) -> Any:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, "chunked bodies are not supported; send Content-Length")
        raw_length = self.headers.get("Content-Length")
        try:
            length = int(raw_length) if raw_length is not None else -1
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, "a valid Content-Length header is required")
        if length > MAX_BODY:
            if length <= MAX_DRAIN:
                # Read and drop it: closing with unread data makes the kernel reset the
                # connection, and the client would never see this reply.
                self._discard(length)
            else:
                self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"body is larger than {MAX_BODY} bytes")
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "body is not valid UTF-8 JSON") from None
        if not isinstance(body, dict) or "value" not in body:
            raise HTTPError(HTTPStatus.BAD_REQUEST, 'body must be a JSON object with a "value" field')
        return body["value"]

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    # Output.

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed requests (bad request line, huge headers) also get a JSON body, and
        # a status line even when the request line was too broken to name a version.
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        try:
            short = HTTPStatus(code).phrase
        except ValueError:
            short = "error"
        self._send(code, {"error": message or short})

    def version_string(self) -> str:
        return self.server_version

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.server.access_log:
            super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"bsn-ledger: {self.address_string()} {format % args}\n")


for _method in _METHODS:
    setattr(Handler, f"do_{_method}", Handler._handle)


class LedgerHTTPServer(ThreadingHTTPServer):
    """Threaded server holding the node; daemon threads never delay shutdown."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, node: LedgerNode, *, access_log: bool = False) -> None:
        self.node = node
        self.access_log = access_log
        super().__init__((node.config.host, node.config.port), Handler)

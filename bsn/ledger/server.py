"""The node's HTTP JSON API (stdlib ``http.server``, one thread per connection).

Routes and formats are those of docs/ledger-protocol.md ("Node HTTP API"); every reply,
errors included, is JSON (``/metrics`` is Prometheus text), errors are
``{"error": "<code>", "detail": "..."}``.
"""

from __future__ import annotations

import hmac
import json
import re
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from bsn.ledger import __version__, auth
from bsn.ledger.blockstore import StoreError
from bsn.ledger.canonical import MAX_DEPTH, CanonicalError, depth_within
from bsn.ledger.chain import receipt_json
from bsn.ledger.crypto import sign
from bsn.ledger.ordering import OrderingUnavailable
from bsn.ledger.tx import MALFORMED, TOO_DEEP, TOO_LARGE, UNKNOWN_SIGNER, Rejection

if TYPE_CHECKING:
    from bsn.ledger.chain import LedgerCore
    from bsn.ledger.config import Config
    from bsn.ledger.ordering import Orderer

MAX_BODY = 1024 * 1024  # bytes, POST /query
BODY_SLACK = 64 * 1024  # POST /tx: BSN_TX_MAX_BYTES (canonical) plus room for whitespace
MAX_BATCH_BODY = 2 * MAX_BODY  # POST /tx/batch (two fit one block of at most 4 MiB)
MAX_DRAIN = 2 * MAX_BATCH_BODY  # a body up to this size is read and dropped before the 413
# Request bodies handled at once, in bytes: a parsed body and its canonical copies take
# several times its size until the reply, so this bounds what concurrent large requests
# can take of the node's memory. A request waits for room, then gets 503 busy.
BODY_BUDGET = 2 * MAX_BATCH_BODY
BODY_WAIT_S = 30.0
CATCH_UP_S = 2.0  # an unknown signer: at most this long waiting for blocks other nodes committed
_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS")
_TX_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_HEIGHT_RE = re.compile(r"^[1-9][0-9]{0,18}$")
_COUNT_RE = re.compile(r"^(0|[1-9][0-9]{0,18})$")
EVENTS_DEFAULT_BLOCKS = 100  # GET /events: blocks per answer unless ``limit`` says otherwise
EVENTS_MAX_BLOCKS = 1000
EVENTS_MAX_BYTES = 1024 * 1024  # block bytes read plus event JSON; whole blocks, at least one


class HTTPError(Exception):
    """Ends a request with a JSON ``{"error", "detail"}`` reply."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}


class BodyBudget:
    """Counts the bytes of request bodies in flight; one body always fits when alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, size: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.used and self.used + size > self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            self.used += size
            return True

    def release(self, size: int) -> None:
        with self._cond:
            self.used -= size
            self._cond.notify_all()


def _reject_constant(name: str) -> Any:
    raise CanonicalError(f"{name} is not valid JSON")


def _rejection_body(exc: Rejection) -> dict[str, Any]:
    return {"error": exc.code, "detail": exc.detail, "tx_id": exc.tx_id}


METRICS = (
    ("bsn_tx_committed_total", "counter", "Transactions in the chain whose receipt is committed.", "committed"),
    ("bsn_tx_failed_total", "counter", "Transactions in the chain whose receipt is failed.", "failed"),
    ("bsn_tx_rejected_total", "counter", "Transactions this node refused since it started.", "rejected"),
    ("bsn_block_height", "gauge", "Height of the last applied block.", "height"),
    ("bsn_storage_bytes", "gauge", "Size of the blocks file.", "storage_bytes"),
    ("bsn_is_proposer", "gauge", "1 when this node proposes the app's blocks.", "is_proposer"),
    ("bsn_ordering_lag_blocks", "gauge", "Committed blocks this node has not applied yet.", "lag_blocks"),
)


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the node."""

    protocol_version = "HTTP/1.1"  # keep-alive for clients such as the gateway
    server_version = f"bsn-ledger/{__version__}"
    timeout = 60  # idle keep-alive connections give their thread back
    server: LedgerHTTPServer
    body_canonical = False  # set by _body: the request body held no floats
    auth_nonce: str | None = None  # the caller's nonce once its request is authenticated
    _auth_header: str | None = None  # a request with a body: checked once _body has read it
    _auth_required = True  # False only for a plain GET /health without credentials
    body_held = 0  # bytes of the body budget this request holds until it is answered

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (tests on a Unix socket)
            pass

    # Dispatch.

    def _handle(self) -> None:
        self.auth_nonce = self._auth_header = None  # keep-alive: nothing carries over
        self._auth_required = True
        try:
            status, body = self._route()
            if self.auth_nonce is None and self._auth_required:
                self._refuse()  # a guard: no route answers a stranger by mistake
        except HTTPError as exc:
            self._send(exc.status, {"error": exc.code, "detail": exc.detail, **exc.extra}, exc.headers)
            return
        except StoreError as exc:
            status, body = HTTPStatus.SERVICE_UNAVAILABLE, {"error": "storage_failure", "detail": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a bug: answer 500 and keep serving
            self.log_error("unhandled error: %r", exc)
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal", "detail": "internal error"}
        if isinstance(body, bytes | str):
            self._send_raw(status, body)
        else:
            self._send(status, body)

    def _route(self) -> tuple[int, Any]:
        method = self.command
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        self._authenticate(path)
        if path == "/tx":
            self._allow(method, "POST")
            return self._post_tx()
        if path == "/tx/batch":
            self._allow(method, "POST")
            return self._post_batch()
        if path.startswith("/tx/"):
            self._allow(method, "GET")
            return self._get_tx(path[4:])
        if path.startswith("/blocks/"):
            self._allow(method, "GET")
            return self._get_block(path[8:])
        if path == "/events":
            self._allow(method, "GET")
            return self._get_events()
        if path.startswith("/state/"):
            self._allow(method, "GET")
            return self._get_state(path[7:])
        if path == "/query":
            self._allow(method, "POST")
            return self._post_query()
        if path == "/chain":
            self._allow(method, "GET")
            return HTTPStatus.OK, self._chain()
        if path == "/health":
            self._allow(method, "GET")
            return self._health()
        if path == "/metrics":
            self._allow(method, "GET")
            return HTTPStatus.OK, self._metrics()
        raise HTTPError(HTTPStatus.NOT_FOUND, "not_found", f"no route {path}")

    def _allow(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            raise HTTPError(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "method_not_allowed",
                f"{method} is not allowed here",
                {"Allow": ", ".join(allowed)},
            )

    # Authentication (bsn/ledger/auth.py; docs/ledger-protocol.md "Node authentication").

    def _authenticate(self, path: str) -> None:
        """Every route needs the node's credential; ``/health`` without one answers its
        status only. A request with a body is checked once ``_body`` has read it."""
        header = self.headers.get("Authorization")
        if header is None and path == "/health":
            self._auth_required = False
            return
        if path == "/metrics" and self._scraper(header):
            self._auth_required = False
            return
        key = self.server.credential
        if self.headers.get("Content-Length", "0").strip() not in ("", "0"):
            if not header or not header.startswith(auth.SCHEME + " "):
                self._refuse()
            self._auth_header = header
            return
        self.auth_nonce = auth.check_request(key, header, self.command, self.path, b"")
        if self.auth_nonce is None:
            self._refuse()

    def _scraper(self, header: str | None) -> bool:
        """A Prometheus scraper with the separate scrape token (``BSN_METRICS_TOKEN_FILE``):
        it cannot sign requests, so it sends the token itself; it opens ``/metrics`` only."""
        token = self.server.metrics_token
        if not token or not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode("utf-8"), token)

    def _check_body_auth(self, raw: bytes) -> None:
        if self._auth_header is not None:
            header, self._auth_header = self._auth_header, None
            self.auth_nonce = auth.check_request(self.server.credential, header, self.command, self.path, raw)
        if self.auth_nonce is None:
            self._refuse()

    def _refuse(self) -> None:
        self.close_connection = True  # an unread body must not be taken for the next request
        raise HTTPError(
            HTTPStatus.UNAUTHORIZED,
            "unauthorized",
            "this node answers only its control plane, gateway and peers (docs/ledger-protocol.md)",
            {"WWW-Authenticate": auth.SCHEME},
        )

    def _identity(self) -> dict[str, Any]:
        """Proof that this is node ``node_id`` of ``app_id``: its node key signs the caller's nonce."""
        core = self.server.core
        challenge = self.auth_nonce or ""
        message = auth.identity_message(core.app_id, core.node_id, challenge)
        return {
            "app_id": core.app_id,
            "node_id": core.node_id,
            "public_key": core.public_key,
            "challenge": challenge,
            "signature": sign(core.private_key, message),
        }

    # Writes.

    def _post_tx(self) -> tuple[int, Any]:
        server = self.server
        core = server.core
        envelope = self._body(core.max_tx_bytes + BODY_SLACK)
        prepared = self._precheck([envelope])[0]
        if isinstance(prepared, Rejection):
            exc = prepared
            raise HTTPError(HTTPStatus.BAD_REQUEST, exc.code, exc.detail, extra={"tx_id": exc.tx_id})
        self._order([prepared])
        receipt = core.wait_receipt(prepared.tx_id, server.wait_s)
        if receipt is None:
            self._unavailable()
            raise HTTPError(
                HTTPStatus.GATEWAY_TIMEOUT,
                "timeout",
                "the transaction is not in a block yet; poll GET /tx/{tx_id}",
                extra={"tx_id": prepared.tx_id},
            )
        if receipt["status"] == "rejected":
            raise HTTPError(
                HTTPStatus.BAD_REQUEST, receipt["error"], receipt["detail"], extra={"tx_id": receipt["tx_id"]}
            )
        return HTTPStatus.OK, receipt

    def _post_batch(self) -> tuple[int, Any]:
        body = self._body(MAX_BATCH_BODY, depth=MAX_DEPTH + 2)  # each envelope MAX_DEPTH deep
        if not isinstance(body, dict) or body.keys() != {"txs"} or not isinstance(body["txs"], list):
            raise HTTPError(HTTPStatus.BAD_REQUEST, MALFORMED, 'body must be {"txs": [signed envelopes]}')
        core = self.server.core
        items = body["txs"]
        if len(items) > core.config.batch_max_txs:
            raise HTTPError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                TOO_LARGE,
                f"a batch holds at most {core.config.batch_max_txs} envelopes, this one {len(items)}",
            )
        results: list[Any] = [None] * len(items)
        admitted = []
        checked = self._precheck(items)
        for index, prepared in enumerate(checked):
            if isinstance(prepared, Rejection):
                exc = prepared
                results[index] = {"tx_id": exc.tx_id, "status": "rejected", "error": exc.code, "detail": exc.detail}
                continue
            admitted.append((index, prepared))
        self._order([p for _, p in admitted])
        receipts = core.wait_receipts([p.tx_id for _, p in admitted], self.server.wait_s)
        waiting = False
        for (index, prepared), receipt in zip(admitted, receipts, strict=True):
            if receipt is None:
                waiting = True
                receipt = {"tx_id": prepared.tx_id, "status": "pending"}
            results[index] = receipt
        if waiting:
            self._unavailable()
            raise HTTPError(
                HTTPStatus.GATEWAY_TIMEOUT,
                "timeout",
                'some transactions are not in a block yet (status "pending"); poll GET /tx/{tx_id}',
                extra={"receipts": results},
            )
        # Composed from each receipt's JSON: the plain committed ones need no encoder.
        return HTTPStatus.OK, b'{"receipts":[' + b",".join(map(receipt_json, results)) + b"]}"

    def _precheck(self, envelopes: list[Any]) -> list[Any]:
        """``core.precheck_many``; those refused for an unknown signer are checked again
        once this node has caught up with the ordering (``Orderer.catch_up``): the user may
        be in a block another node confirmed a moment ago, and a client that saw that
        confirmation must not be told the user does not exist."""
        core = self.server.core
        checked = core.precheck_many(envelopes, parsed=self.body_canonical, depth_checked=True)
        unknown = [i for i, p in enumerate(checked) if isinstance(p, Rejection) and p.code == UNKNOWN_SIGNER]
        if unknown and self.server.orderer.catch_up(CATCH_UP_S):
            again = core.precheck_many([envelopes[i] for i in unknown], parsed=self.body_canonical, depth_checked=True)
            for index, result in zip(unknown, again, strict=True):
                checked[index] = result
        return checked

    def _order(self, prepared: list[Any]) -> None:
        fresh = [p for p in prepared if p.fresh]
        if not fresh:
            return
        try:
            self.server.orderer.submit([p.envelope for p in fresh])
        except OrderingUnavailable as exc:
            self.server.core.forget(fresh)
            raise HTTPError(
                HTTPStatus.SERVICE_UNAVAILABLE, "ordering_unavailable", f"{exc}; retry the same envelope"
            ) from None

    def _unavailable(self) -> None:
        core = self.server.core
        if not core.healthy:
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, "storage_failure", core.failure or core.store.failed or "")

    # Reads.

    def _get_tx(self, tx_id: str) -> tuple[int, Any]:
        if not _TX_ID_RE.match(tx_id):
            raise HTTPError(HTTPStatus.NOT_FOUND, "not_found", "a tx_id is 64 lowercase hex characters")
        core = self.server.core
        found = core.transaction_json(tx_id)  # stored bytes: never parsed, however deep
        if found is None:
            dropped = core.receipt(tx_id)
            detail = "no such transaction in the chain"
            if dropped is not None and dropped["status"] == "rejected":
                detail = f"rejected: {dropped['error']}: {dropped['detail']}"
            raise HTTPError(HTTPStatus.NOT_FOUND, "not_found", detail)
        return HTTPStatus.OK, found

    def _get_block(self, raw: str) -> tuple[int, Any]:
        line = self.server.core.block_line(int(raw)) if _HEIGHT_RE.match(raw) else None
        if line is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, "not_found", f"no block at height {raw}")
        return HTTPStatus.OK, line

    def _get_events(self) -> tuple[int, Any]:
        query = parse_qs(self.path.partition("?")[2], keep_blank_values=True)
        if set(query) - {"after", "limit"} or any(len(v) != 1 for v in query.values()):
            raise HTTPError(HTTPStatus.BAD_REQUEST, MALFORMED, "GET /events?after=<height>&limit=<blocks>")
        after = query.get("after", ["0"])[0]
        limit = query.get("limit", [str(EVENTS_DEFAULT_BLOCKS)])[0]
        if not _COUNT_RE.match(after) or not _HEIGHT_RE.match(limit) or int(limit) > EVENTS_MAX_BLOCKS:
            raise HTTPError(
                HTTPStatus.BAD_REQUEST,
                MALFORMED,
                f"after: a height >= 0; limit: 1..{EVENTS_MAX_BLOCKS} blocks",
            )
        head, events, next_after = self.server.core.events(int(after), int(limit), EVENTS_MAX_BYTES)
        return HTTPStatus.OK, {"height": head, "events": events, "next_after": next_after}

    def _get_state(self, rest: str) -> tuple[int, Any]:
        contract, sep, raw_key = rest.partition("/")
        core = self.server.core
        try:
            key = unquote(raw_key, errors="strict")
        except UnicodeDecodeError:
            key = ""
        if not sep or not key or contract not in core.contracts:
            raise HTTPError(HTTPStatus.NOT_FOUND, "not_found", "GET /state/{deployed contract}/{key}")
        value = core.value(contract, key)
        if value is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, "not_found", f"no key {key!r} in {contract}")
        return HTTPStatus.OK, {"contract": contract, "key": key, "value": value}

    def _post_query(self) -> tuple[int, Any]:
        body = self._body(MAX_BODY)
        if not isinstance(body, dict) or body.keys() != {"contract", "function", "args"}:
            raise HTTPError(HTTPStatus.BAD_REQUEST, MALFORMED, 'body must be {"contract", "function", "args"}')
        try:
            result = self.server.core.query(body["contract"], body["function"], body["args"])
        except Rejection as exc:
            raise HTTPError(HTTPStatus.BAD_REQUEST, exc.code, exc.detail) from None
        return HTTPStatus.OK, {"result": result}

    def _chain(self) -> dict[str, Any]:
        info = self.server.core.info()
        status = self.server.orderer.status()
        info["ordering"] = status.get("mode")
        info["proposer"] = status.get("proposer")
        info["is_proposer"] = bool(status.get("is_proposer"))
        info["contract"] = self.server.core.config.contract
        info["identity"] = self._identity()
        return info

    def _health(self) -> tuple[int, Any]:
        core = self.server.core
        if self.auth_nonce is None:  # a stranger: the status and nothing else
            if core.healthy:
                return HTTPStatus.OK, {"status": "ok"}
            return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "error"}
        height, head_hash = core.tip()
        ordering = self.server.orderer.status()
        # The chain facts the control plane records (head and proposer) ride along, so its
        # reconcile pass needs one call a node, not /health and then /chain (issue 9).
        body = {
            "status": "ok",
            "node_id": core.node_id,
            "app_id": core.app_id,
            "height": height,
            "head_hash": head_hash,
            "ordering": ordering.get("mode"),
            "proposer": ordering.get("proposer"),
            "identity": self._identity(),
        }
        if not core.healthy:
            body.update(status="error", error="storage_failure", detail=core.failure or core.store.failed)
            return HTTPStatus.SERVICE_UNAVAILABLE, body
        return HTTPStatus.OK, body

    def _metrics(self) -> str:
        values: dict[str, Any] = self.server.core.counters()
        status = self.server.orderer.status()
        values["is_proposer"] = 1 if status.get("is_proposer") else 0
        values["lag_blocks"] = int(status.get("lag_blocks") or 0)
        lines = []
        for name, kind, help_text, field in METRICS:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {values[field]}"]
        return "\n".join(lines) + "\n"

    # Input.

    def _body(self, limit: int, depth: int = MAX_DEPTH) -> Any:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, MALFORMED, "chunked bodies are not supported; send Content-Length")
        raw_length = self.headers.get("Content-Length")
        try:
            length = int(raw_length) if raw_length is not None else -1
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, MALFORMED, "a valid Content-Length header is required")
        if length > limit:
            if length <= MAX_DRAIN:
                # Read and drop it: closing with unread data makes the kernel reset the
                # connection, and the client would never see this reply.
                self._discard(length)
            else:
                self.close_connection = True
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, TOO_LARGE, f"body is larger than {limit} bytes")
        if not self.server.body_budget.acquire(length, BODY_WAIT_S):
            self._discard(length)
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, "busy", "too many large requests at once; retry")
        self.body_held = length
        raw = self.rfile.read(length)
        self._check_body_auth(raw)
        if not depth_within(raw, depth):
            # Before parsing: the parser's recursion is what a deep body would drive.
            raise HTTPError(HTTPStatus.BAD_REQUEST, TOO_DEEP, f"JSON nested deeper than {depth} levels")
        floats: list[str] = []

        def parse_float(text: str) -> float:
            floats.append(text)
            return float(text)

        try:
            value = json.JSONDecoder(parse_float=parse_float, parse_constant=_reject_constant).decode(
                raw.decode("utf-8")
            )
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise HTTPError(HTTPStatus.BAD_REQUEST, MALFORMED, "body is not valid UTF-8 JSON") from None
        # Without floats the body holds only canonical types: precheck can skip its type walk.
        self.body_canonical = not floats
        return value

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            if self.body_held:
                self.server.body_budget.release(self.body_held)
                self.body_held = 0

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
        self._send_raw(status, data, headers)

    def _send_raw(self, status: int, data: bytes | str, headers: dict[str, str] | None = None) -> None:
        content_type = "application/json"
        if isinstance(data, str):
            data = data.encode("utf-8")
            content_type = "text/plain; version=0.0.4; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if self.auth_nonce is not None:
            self.send_header(auth.REPLY_HEADER, auth.reply_mac(self.server.credential, self.auth_nonce, status, data))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        # Headers and body in one write: two small writes on a keep-alive connection
        # meet Nagle's algorithm and the client's delayed ACK (~40 ms per reply).
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(data)
        self.flush_headers()

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
        self._send(code, {"error": "bad_request" if code == 400 else "http_error", "detail": message or short})

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
    """Threaded server holding the core and the orderer; daemon threads never delay shutdown."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        config: Config,
        core: LedgerCore,
        orderer: Orderer,
        credential: str,
        *,
        listener: socket.socket | None = None,
    ) -> None:
        """``listener``: a socket listening already (a warm node's claim server's,
        bsn/ledger/claim.py) to serve on instead of binding a new one."""
        self.credential = credential.encode("utf-8")  # the HMAC key of the node's API credential
        self.metrics_token = (config.metrics_token or "").encode("utf-8")
        self.core = core
        self.orderer = orderer
        self.access_log = config.access_log
        self.wait_s = config.tx_wait_ms / 1000
        self.body_budget = BodyBudget(BODY_BUDGET)
        super().__init__((config.host, config.port), Handler, bind_and_activate=listener is None)
        if listener is not None:
            self.socket.close()
            self.socket = listener
            self.server_address = listener.getsockname()
            self.server_name, self.server_port = self.server_address[:2]

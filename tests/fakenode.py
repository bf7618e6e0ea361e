"""Stand-ins for a ledger node on 127.0.0.1, for gateway, user and verify tests.

- ``FakeNode``: an HTTP server whose replies are scripted per (method, path) and which
  records every request it gets (to prove that nothing reached it, too). Given the
  node's ``credential`` it speaks "Node authentication" of docs/ledger-protocol.md —
  written out here from the page (hmac/hashlib), not with ``bsn.ledger.auth`` — and
  refuses unsigned requests; without one it is an impostor: it answers anyone, unsigned.
- ``SimLedger``: a tiny in-memory ledger speaking docs/ledger-protocol.md — it checks
  signatures over canonical JSON written out here independently (json.dumps, not the
  ledger's helper), nonces, users added by `_config`; runs ``kv``; cuts one signed block
  per submission. Enough to test the control plane and the client against the protocol
  without the real node.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

Reply = tuple[int, Any]
Handler = Callable[[str, str, Any], Reply | None]


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def check_signed(credential: str, header: str | None, method: str, target: str, body: bytes) -> str | None:
    """The nonce of a request signed ``BSN1 <ts>:<nonce>:<mac>`` with ``credential``, else None."""
    if not header or not header.startswith("BSN1 "):
        return None
    try:
        ts, nonce, mac = header[5:].split(":")
        fresh = abs(time.time() - int(ts)) <= 300
    except ValueError:
        return None
    expected = _hmac(credential, f"BSN1\n{method}\n{target}\n{ts}\n{nonce}\n{_sha256(body)}")
    return nonce if fresh and hmac.compare_digest(expected, mac) else None


class FakeNode:
    """HTTP server on 127.0.0.1:<free port>; ``handler(method, path, body)`` gives the reply.

    ``credential``: check each request's signature (401 otherwise) and MAC each reply, as
    the node does. ``identity``: ``(app id, node id, base64 private key)`` to prove on
    ``/health`` and ``/chain``. ``port``: bind that port (an impostor on a node's port).
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        credential: str | None = None,
        identity: tuple[str, str, str] | None = None,
        port: int = 0,
    ) -> None:
        self.routes: dict[tuple[str, str], Reply] = {}
        self.handler = handler
        self.requests: list[tuple[str, str, Any]] = []
        self.delay = 0.0
        self.credential = credential
        self.identity = identity
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _do(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                path = unquote(self.path)
                nonce = None
                if outer.credential is not None:
                    header = self.headers.get("Authorization")
                    nonce = check_signed(outer.credential, header, self.command, self.path, raw)
                    if nonce is None:
                        self._reply(401, {"error": "unauthorized", "detail": "sign the request"}, None)
                        return
                outer.requests.append((self.command, path, body))
                if outer.delay:
                    threading.Event().wait(outer.delay)
                reply = outer.routes.get((self.command, path))
                if reply is None and outer.handler is not None:
                    reply = outer.handler(self.command, path, body)
                status, payload = reply or (404, {"error": "not_found", "detail": path})
                if outer.identity is not None and nonce and path in ("/health", "/chain") and isinstance(payload, dict):
                    app_id, node_id, private_b64 = outer.identity
                    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))
                    message = f"bsn-node-identity/v1\n{app_id}\n{node_id}\n{nonce}".encode()
                    payload = {
                        **payload,
                        "identity": {
                            "app_id": app_id,
                            "node_id": node_id,
                            "public_key": _b64(key.public_key().public_bytes_raw()),
                            "challenge": nonce,
                            "signature": _b64(key.sign(message)),
                        },
                    }
                self._reply(status, payload, nonce)

            def _reply(self, status: int, payload: Any, nonce: str | None) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()  # bytes: as they are
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if nonce is not None and outer.credential is not None:
                    mac = _hmac(outer.credential, f"BSN1-reply\n{nonce}\n{status}\n{_sha256(data)}")
                    self.send_header("X-BSN-Reply-MAC", mac)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _do

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", port), _H)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        """Stop as a node's process stops: the port and every open connection closed (the
        control plane keeps connections to nodes alive between calls)."""
        self.server.shutdown()
        self.server.server_close()
        self.server.close_connections()


class _Server(ThreadingHTTPServer):
    """Remembers its open connections, so ``close`` can end them as a process exit would."""

    daemon_threads = True

    def __init__(self, *args: Any) -> None:
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()
        super().__init__(*args)

    def process_request(self, request, client_address) -> None:
        with self.open_lock:
            self.open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.open_lock:
            self.open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):  # a caller gave up
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.open_lock:
            conns, self.open = list(self.open), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _verify(public_b64: str, sig_b64: str, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64)).verify(base64.b64decode(sig_b64), data)
    except (InvalidSignature, ValueError):
        return False
    return True


def merkle_root(leaves: list[bytes]) -> str:
    """RFC 6962, written out recursively (the protocol's definition, independent of bsn.ledger)."""

    def mth(items: list[bytes]) -> bytes:
        if not items:
            return hashlib.sha256(b"").digest()
        if len(items) == 1:
            return hashlib.sha256(b"\x00" + items[0]).digest()
        k = 1
        while k * 2 < len(items):
            k *= 2
        return hashlib.sha256(b"\x01" + mth(items[:k]) + mth(items[k:])).digest()

    return mth(leaves).hex()


class SimLedger:
    """One simulated node of ``app_id`` (solo): users, nonces, kv, signed blocks."""

    def __init__(
        self, *, app_id: str, node_id: str, node_private_b64: str, admin_public_key: str, credential: str
    ) -> None:
        self.app_id = app_id
        self.node_id = node_id
        self.key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(node_private_b64))
        self.users: dict[str, str] = {"_admin": admin_public_key}
        self.revoked: set[str] = set()
        self.nonces: set[tuple[str, str]] = set()
        self.blocks: list[dict] = []
        self.receipts: dict[str, tuple[dict, dict]] = {}
        self.kv: dict[str, Any] = {}
        self.down_ordering = False
        self.health_facts = True  # /health carries the chain facts, as the node does (False: an older image)
        self.node = FakeNode(self.handle, credential=credential, identity=(app_id, node_id, node_private_b64))

    @property
    def endpoint(self) -> str:
        return self.node.endpoint

    def close(self) -> None:
        self.node.close()

    @property
    def head(self) -> str:
        return self.blocks[-1]["hash"] if self.blocks else "0" * 64

    def _check(self, envelope: Any) -> tuple[str, str] | dict:
        """A rejection ``(code, detail)`` or the tx."""
        if not isinstance(envelope, dict) or set(envelope) != {"tx", "sig"} or not isinstance(envelope["tx"], dict):
            return "malformed", "not an envelope"
        tx = envelope["tx"]
        if set(tx) != {"app", "contract", "function", "args", "signer", "nonce", "timestamp"}:
            return "malformed", "tx fields"
        if tx["app"] != self.app_id:
            return "wrong_app", tx["app"]
        key = self.users.get(tx["signer"])
        if key is None or tx["signer"] in self.revoked:
            return "unknown_signer", tx["signer"]
        if not _verify(key, envelope["sig"], canonical(tx)):
            return "bad_signature", "signature does not verify"
        if (tx["signer"], tx["nonce"]) in self.nonces:
            return "replayed_nonce", tx["nonce"]
        if (tx["contract"], tx["function"]) not in {
            ("kv", "put"),
            ("kv", "get"),
            ("_config", "user.add"),
            ("_config", "user.revoke"),
        }:
            return "unknown_function", f"{tx['contract']}.{tx['function']}"
        return tx

    def _execute(self, tx: dict) -> tuple[str, Any, str | None]:
        args = tx["args"]
        if tx["contract"] == "_config":
            if tx["signer"] != "_admin":
                return "failed", None, "only _admin"
            if tx["function"] == "user.add":
                if args["name"] in self.users:
                    return "failed", None, "user exists"
                self.users[args["name"]] = args["public_key"]
            else:
                if args["name"] not in self.users:
                    return "failed", None, "no such user"
                self.revoked.add(args["name"])
            return "committed", None, None
        if tx["function"] == "put":
            self.kv[args["key"]] = args["value"]
            return "committed", None, None
        return "committed", self.kv.get(args["key"]), None

    def commit(self, envelopes: list[dict]) -> list[dict]:
        """Apply valid envelopes in one block; receipts in order."""
        header = {
            "app": self.app_id,
            "height": len(self.blocks) + 1,
            "prev_hash": self.head,
            "merkle_root": merkle_root([canonical(e) for e in envelopes]),
            "timestamp": 1764000000000 + len(self.blocks),
            "proposer": self.node_id,
            "tx_count": len(envelopes),
        }
        digest = hashlib.sha256(canonical(header)).digest()
        block = {"header": header, "hash": digest.hex(), "signature": _b64(self.key.sign(digest)), "txs": envelopes}
        self.blocks.append(block)
        receipts = []
        for index, envelope in enumerate(envelopes):
            tx = envelope["tx"]
            self.nonces.add((tx["signer"], tx["nonce"]))
            status, result, error = self._execute(tx)
            tx_id = hashlib.sha256(canonical(tx)).hexdigest()
            receipt = {
                "tx_id": tx_id,
                "status": status,
                "result": result,
                "error": error,
                "height": header["height"],
                "index": index,
                "events": [],
            }
            self.receipts[tx_id] = (receipt, envelope)
            receipts.append(receipt)
        return receipts

    def handle(self, method: str, path: str, body: Any) -> Reply | None:
        if method == "POST" and path == "/tx":
            if self.down_ordering:
                return 503, {"error": "ordering_unavailable", "detail": "etcd unreachable"}
            checked = self._check(body)
            if isinstance(checked, tuple):
                return 400, {"error": checked[0], "detail": checked[1]}
            return 200, self.commit([body])[0]
        if method == "POST" and path == "/tx/batch":
            good, results = [], []
            for envelope in body["txs"]:
                checked = self._check(envelope)
                if isinstance(checked, tuple):
                    results.append({"status": "rejected", "error": checked[0]})
                else:
                    good.append(envelope)
                    results.append(None)
            receipts = iter(self.commit(good)) if good else iter(())
            return 200, {"receipts": [r if r is not None else next(receipts) for r in results]}
        if method == "GET" and path.startswith("/tx/"):
            found = self.receipts.get(path[4:])
            return (200, {"receipt": found[0], "tx": found[1]}) if found else (404, {"error": "not_found"})
        if method == "GET" and path.startswith("/blocks/"):
            h = int(path.split("/")[2])
            return (200, self.blocks[h - 1]) if 1 <= h <= len(self.blocks) else (404, {"error": "not_found"})
        if method == "GET" and path.startswith("/state/"):
            _, _, contract, key = path.split("/", 3)
            if contract != "kv" or key not in self.kv:
                return 404, {"error": "not_found"}
            return 200, {"contract": contract, "key": key, "value": self.kv[key]}
        if method == "GET" and path == "/chain":
            public = self.key.public_key().public_bytes_raw()
            return 200, {
                "app_id": self.app_id,
                "node_id": self.node_id,
                "public_key": _b64(public),
                "height": len(self.blocks),
                "head_hash": self.head,
                "state_root": "0" * 64,
                "ordering": "solo",
                "proposer": self.node_id,
                "is_proposer": True,
                "nodes": [{"node_id": self.node_id, "public_key": _b64(public)}],
                "users": sorted(u for u in self.users if u not in self.revoked and u != "_admin"),
            }
        if method == "GET" and path == "/health":
            if not self.health_facts:
                return 200, {"status": "ok"}
            facts = {"height": len(self.blocks), "head_hash": self.head, "proposer": self.node_id}
            return 200, {"status": "ok", "node_id": self.node_id, "app_id": self.app_id, "ordering": "solo", **facts}
        return None

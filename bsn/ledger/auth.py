"""Node API authentication: callers prove they hold the node's credential, the node proves
it is the node they meant (docs/ledger-protocol.md, "Node authentication").

Plain Python (hmac, hashlib), shared by the node, its peers and the control plane.

- Each node has its own API credential: a random secret delivered as a file
  (``BSN_NODE_API_CREDENTIAL_FILE``). Callers never send it: a request carries
  ``Authorization: BSN1 <unix seconds>:<nonce>:<hmac>``, an HMAC-SHA256 keyed with the
  credential over the method, the request target, the time, a fresh nonce and the body's
  SHA-256. A process squatting on a node's port learns nothing it could replay elsewhere
  or use to forge answers.
- Every authenticated reply carries ``X-BSN-Reply-MAC``: an HMAC with the same credential
  over the caller's nonce, the status and the reply body's SHA-256. Only the real node
  (or the control plane that issued the credential) can produce it.
- ``/health`` and ``/chain`` also carry ``identity``: the node's app id, node id, public
  key and an Ed25519 signature with its node key over the caller's nonce (the challenge).

Why HMAC and not a bearer token: a bearer token sent to whatever answers on a port would
hand the credential to an impostor, which could then forge the reply MACs. The per-request
cost is two SHA-256s and two HMACs (microseconds; the node's only required per-transaction
work stays the Ed25519 verification).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from pathlib import Path

SCHEME = "BSN1"
REPLY_HEADER = "X-BSN-Reply-MAC"
MAX_SKEW_S = 300  # a request's time may differ from the node's clock by this much
IDENTITY_DOMAIN = "bsn-node-identity/v1"
CREDENTIAL_FILE = "api.credential"  # in the data dir, when no credential is configured (dev)
_NONCE_RE = re.compile(r"^[0-9a-f]{32,64}$")
_MAC_RE = re.compile(r"^[0-9a-f]{64}$")
_EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()


def generate_credential() -> str:
    """A new node API credential: 32 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(32)


def new_nonce() -> str:
    return secrets.token_hex(16)


def _digest(body: bytes | None) -> str:
    return hashlib.sha256(body).hexdigest() if body else _EMPTY_DIGEST


def request_mac(key: bytes, method: str, target: str, ts: int, nonce: str, body: bytes | None) -> str:
    message = f"{SCHEME}\n{method}\n{target}\n{ts}\n{nonce}\n{_digest(body)}".encode()
    return hmac.digest(key, message, "sha256").hex()


def authorization(
    key: bytes, method: str, target: str, body: bytes | None, *, nonce: str | None = None, now: float | None = None
) -> tuple[str, str]:
    """``(Authorization header value, nonce)`` for one request."""
    nonce = nonce or new_nonce()
    ts = int(time.time() if now is None else now)
    return f"{SCHEME} {ts}:{nonce}:{request_mac(key, method, target, ts, nonce, body)}", nonce


def check_request(
    key: bytes, header: str | None, method: str, target: str, body: bytes | None, *, now: float | None = None
) -> str | None:
    """The request's nonce when ``header`` authenticates it, else None."""
    if not header or not header.startswith(SCHEME + " "):
        return None
    parts = header[len(SCHEME) + 1 :].strip().split(":")
    if len(parts) != 3:
        return None
    raw_ts, nonce, mac = parts
    if not raw_ts.isdigit() or len(raw_ts) > 12 or not _NONCE_RE.match(nonce) or not _MAC_RE.match(mac):
        return None
    ts = int(raw_ts)
    if abs((time.time() if now is None else now) - ts) > MAX_SKEW_S:
        return None
    if not hmac.compare_digest(request_mac(key, method, target, ts, nonce, body), mac):
        return None
    return nonce


def reply_mac(key: bytes, nonce: str, status: int, body: bytes | None) -> str:
    message = f"{SCHEME}-reply\n{nonce}\n{status}\n{_digest(body)}".encode()
    return hmac.digest(key, message, "sha256").hex()


def check_reply(key: bytes, nonce: str, status: int, body: bytes | None, mac: str | None) -> bool:
    return bool(mac) and hmac.compare_digest(reply_mac(key, nonce, status, body), mac or "")


def identity_message(app_id: str, node_id: str, challenge: str) -> bytes:
    """What a node signs with its node key to prove who it is (domain-separated: never a
    valid transaction or block header, which are canonical JSON)."""
    return f"{IDENTITY_DOMAIN}\n{app_id}\n{node_id}\n{challenge}".encode()


def local_credential(data_dir: str) -> tuple[str, Path]:
    """Development nodes started by hand: the credential kept in ``<data>/api.credential``
    (created 0600 on first start). Managed nodes always get theirs as a file."""
    path = Path(data_dir) / CREDENTIAL_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip(), path
    credential = generate_credential()
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(credential + "\n")
    return credential, path

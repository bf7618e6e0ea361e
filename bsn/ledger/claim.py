"""A warm node's claim (docs/provisioning.md, "Warm nodes"; docs/ledger-protocol.md).

A warm node is started before it belongs to any app: with ``BSN_CLAIM_FILE`` set and no
such file yet, it loads its modules and stands by. It is claimed in one of two ways, and
starts with the claim's settings either way:

- **over HTTP, on its own port** (the fast way): ``POST /claim`` whose body is the claim
  sealed with AES-256-GCM under the warm node's claim key — a secret file the control
  plane wrote when it made the warm node (``BSN_CLAIM_KEY_FILE``) and derives again to
  claim it. The node opens the seal, writes the claim's secret files and then the claim
  file into its secrets directory (the files the engine would have written, so a restart
  reads them the same way), answers ``200`` and starts; its listening socket goes on to
  the node's server, so a caller that connects meanwhile waits instead of being refused;
- **by file**: the claim file appears in its secrets directory (the engine copied it in:
  ``put_archive``); the way before there was a claim key, and the control plane's way
  back when the HTTP claim does not answer.

A stranger on the port gets a clear 4xx and changes nothing: a body that is not sealed
with this node's key is ``403``, too big ``413``, any other request ``404``/``405``; once a
claim is taken a second one is ``409``. Only the standard library and ``cryptography``
(already the node's dependency): the seal is one AEAD call, the server http.server's.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import selectors
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CLAIM_PATH = "/claim"
MAX_CLAIM_BYTES = 64 * 1024  # a claim is a few KiB: settings and a handful of keys
NONCE_BYTES = 12
AAD = b"bsn warm claim v1"
FILE_NAME = re.compile(r"^bsn_[a-z0-9_]{1,64}$")  # secret_file_name() of a BSN_* setting
READ_TIMEOUT_S = 5.0  # a connection that sends nothing is closed after this
STANDING_BY = {"error": "standing_by", "detail": "this node belongs to no app yet"}


class ClaimRefused(ValueError):
    """Not a claim this node takes (wrong key, tampered, malformed)."""


@dataclass(frozen=True)
class Claim:
    settings: dict[str, str]  # BSN_* settings, the secret files' *_FILE paths among them
    files: dict[str, str]  # secret file name (in the secrets directory) -> contents


def claim_key(text: str) -> bytes:
    """The 32-byte key from its text form (URL-safe base64, as the control plane writes it)."""
    try:
        key = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ClaimRefused("the claim key is not base64") from None
    if len(key) != 32:
        raise ClaimRefused("the claim key must be 32 bytes")
    return key


def check_settings(claimed: object, where: str) -> dict[str, str]:
    """``claimed`` if it is a JSON object of ``BSN_*`` strings (not ``BSN_CLAIM_FILE``)."""
    if not isinstance(claimed, dict) or not all(
        isinstance(k, str) and k.startswith("BSN_") and k != "BSN_CLAIM_FILE" and isinstance(v, str)
        for k, v in claimed.items()
    ):
        raise ClaimRefused(f"{where} must be a JSON object of BSN_* settings (strings)")
    return claimed


def seal(key: bytes, claim: Claim) -> bytes:
    """The body of ``POST /claim``: nonce, then the sealed JSON (the control plane's side)."""
    plain = json.dumps({"settings": claim.settings, "files": claim.files}, sort_keys=True).encode("utf-8")
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plain, AAD)


def unseal(key: bytes, body: bytes) -> Claim:
    """The claim in ``body``; ClaimRefused unless it was sealed with ``key`` and is well formed."""
    if len(body) <= NONCE_BYTES:
        raise ClaimRefused("not a sealed claim")
    try:
        plain = AESGCM(key).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], AAD)
    except InvalidTag:
        raise ClaimRefused("not sealed with this node's claim key") from None
    try:
        payload = json.loads(plain)
    except ValueError:
        raise ClaimRefused("the claim is not JSON") from None
    if not isinstance(payload, dict) or set(payload) != {"settings", "files"}:
        raise ClaimRefused("the claim must have exactly settings and files")
    files = payload["files"]
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and FILE_NAME.match(k) and isinstance(v, str) for k, v in files.items()
    ):
        raise ClaimRefused("the claim's files must map bsn_* names to strings")
    return Claim(settings=check_settings(payload["settings"], "the claim's settings"), files=files)


def write_claim(claim_file: str, claim: Claim) -> None:
    """The secret files (0400), then the claim file (0600) last, each replaced whole (a
    temporary file renamed over it), into the claim file's directory; then that directory
    is synced, so a restart finds all of them or, without the claim file, stands by again."""
    directory = os.path.dirname(claim_file)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    claim_text = json.dumps(claim.settings, sort_keys=True, separators=(",", ":"))
    for name, text, mode in [
        *((name, text, 0o400) for name, text in sorted(claim.files.items())),
        (os.path.basename(claim_file), claim_text, 0o600),
    ]:
        path = os.path.join(directory, name)
        temporary = f"{path}.new"
        try:
            os.unlink(temporary)  # left by an earlier try: read-only, so not opened for writing
        except FileNotFoundError:
            pass
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StandByServer(ThreadingHTTPServer):
    """Serves ``POST /claim`` while the node stands by; ``claimed`` is set (an Event) with
    ``settings`` once a claim is written. From then on it accepts no connection: they wait
    in the socket's backlog for the node's own server, which ``handover()`` gives the
    listening socket to."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], key: bytes, claim_file: str) -> None:
        self.key = key
        self.claim_file = claim_file
        self.settings: dict[str, str] | None = None
        self.came: str = ""  # how the claim came: "over HTTP" or "by file"
        self.claimed = threading.Event()
        self.lock = threading.Lock()  # a claim is taken, or a connection accepted, not both at once
        self._closing = threading.Event()
        super().__init__(address, _StandByHandler)
        # The serving loop sleeps in select() until a connection or a byte on this pipe (a
        # claim settled, a handover): no timeout to poll on, so an idle warm node's server
        # costs nothing (it polled every 10 ms).
        self._wake_r, wake_w = os.pipe()
        self._wake_w: int | None = wake_w
        self._serving = threading.Thread(target=self._serve, daemon=True)
        self._serving.start()

    def server_bind(self) -> None:
        # HTTPServer.server_bind also asks for the host's FQDN (a DNS lookup): not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def _serve(self) -> None:
        # socketserver's serve_forever would accept one more connection after the claim and
        # answer it "standing by"; this loop accepts none once a claim is taken.
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._closing.is_set():
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_r in ready:
                    os.read(self._wake_r, 64)
                with self.lock:
                    if self.claimed.is_set():
                        return
                    if self in ready:
                        self._handle_request_noblock()

    def _wake(self) -> None:
        fd = self._wake_w
        if fd is not None:
            os.write(fd, b"x")

    def take(self, claim: Claim) -> bool:
        """Write ``claim`` unless one was taken already (then False)."""
        with self.lock:
            if self.settings is not None:
                return False
            write_claim(self.claim_file, claim)
            self._settle(claim.settings, "over HTTP")
        return True

    def settled(self, read_file: Callable[[], dict[str, str] | None]) -> tuple[dict[str, str], str] | None:
        """The claim's settings and how they came, or None while there is none. A claim file
        that ``read_file`` finds is taken as the claim (an HTTP claim after it is ``409``).
        Under the lock: a claim that is being written over HTTP is waited for, never read
        half-way as one that came by file."""
        with self.lock:
            if self.settings is None:
                filed = read_file()
                if filed is None:
                    return None
                self._settle(filed, "by file")
            return dict(self.settings), self.came

    def _settle(self, settings: dict[str, str], came: str) -> None:
        self.settings, self.came = dict(settings), came
        self.claimed.set()
        self._wake()

    def handover(self):
        """The listening socket, once no connection is accepted here any more."""
        self._closing.set()
        if self._wake_w is not None:
            self._wake()
            self._serving.join()
            fds, self._wake_w = (self._wake_r, self._wake_w), None
            for fd in fds:
                os.close(fd)
        return self.socket

    def close(self) -> None:
        self.handover()
        self.server_close()


class _StandByHandler(BaseHTTPRequestHandler):
    server: StandByServer
    timeout = READ_TIMEOUT_S
    server_version = "bsn-ledger"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        pass  # a warm node is quiet; what matters shows in the control plane's log

    def _answer(self, status: HTTPStatus, body: dict) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def do_GET(self) -> None:
        if self.path == CLAIM_PATH:
            return self._answer(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "method_not_allowed", "allowed": "POST"})
        return self._answer(HTTPStatus.NOT_FOUND, STANDING_BY)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def do_POST(self) -> None:
        if self.path != CLAIM_PATH:
            return self._answer(HTTPStatus.NOT_FOUND, STANDING_BY)
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._answer(HTTPStatus.LENGTH_REQUIRED, {"error": "length_required"})
        if int(length) > MAX_CLAIM_BYTES:
            return self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "too_large", "max": MAX_CLAIM_BYTES})
        body = self.rfile.read(int(length))
        try:
            claim = unseal(self.server.key, body)
        except ClaimRefused as exc:
            return self._answer(HTTPStatus.FORBIDDEN, {"error": "claim_refused", "detail": str(exc)})
        try:
            taken = self.server.take(claim)
        except OSError as exc:
            return self._answer(HTTPStatus.INSUFFICIENT_STORAGE, {"error": "cannot_write", "detail": str(exc)})
        if not taken:
            return self._answer(HTTPStatus.CONFLICT, {"error": "already_claimed"})
        return self._answer(HTTPStatus.OK, {"claimed": True})

"""TLS material of a region's remote Docker engine: checked on entry, stored encrypted.

A region on ``tcp://`` (or ``https://``) talks to its engine over the network, where the
engine's API is root on that machine. Such a region must carry the engine's CA and a
client certificate and key (the engine runs with ``--tlsverify``); without them it is
refused unless ``BSN_ALLOW_INSECURE_ENGINES`` is set (development only). The PEM texts are
stored encrypted in the region row (``apps.common.crypto``), like node keys; the Docker
SDK wants file paths, so ``tls_files`` writes them to a directory only this process's user
can read, named by their fingerprint, and reuses it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

NETWORK_SCHEMES = ("tcp://", "https://", "http://")


class EngineTLSInvalid(ValueError):
    """The TLS material is unusable or missing where it is required; the message says why."""


@dataclass(frozen=True)
class EngineTLS:
    ca: str  # PEM of the CA that signed the engine's server certificate
    cert: str  # PEM of the client certificate the engine trusts
    key: str  # PEM of the client certificate's private key

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.ca}\0{self.cert}\0{self.key}".encode()).hexdigest()[:16]

    def describe(self) -> str:
        """For operators: who the client certificate names and until when (no secret)."""
        cert = x509.load_pem_x509_certificate(self.cert.encode())
        return f"client {cert.subject.rfc4514_string()}, valid until {cert.not_valid_after_utc:%Y-%m-%d}"


def over_network(base_url: str) -> bool:
    """Does this engine URL cross the network (unlike a unix socket or ssh)?"""
    return base_url.strip().lower().startswith(NETWORK_SCHEMES)


def parse_tls(ca: str, cert: str, key: str) -> EngineTLS | None:
    """Check PEM texts (all three or none): the certificates parse, the key is a private
    key and belongs to the client certificate. None when all are blank."""
    ca, cert, key = (ca or "").strip(), (cert or "").strip(), (key or "").strip()
    if not (ca or cert or key):
        return None
    missing = [name for name, value in (("CA", ca), ("client certificate", cert), ("client key", key)) if not value]
    if missing:
        raise EngineTLSInvalid(
            f"TLS to an engine needs its CA, a client certificate and the client key; missing: {', '.join(missing)}"
        )
    try:
        x509.load_pem_x509_certificate(ca.encode())
    except ValueError as exc:
        raise EngineTLSInvalid(f"the CA is not a PEM certificate: {exc}") from None
    try:
        client = x509.load_pem_x509_certificate(cert.encode())
    except ValueError as exc:
        raise EngineTLSInvalid(f"the client certificate is not a PEM certificate: {exc}") from None
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise EngineTLSInvalid(f"the client key is not an unencrypted PEM private key: {exc}") from None
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*der) != client.public_key().public_bytes(*der):
        raise EngineTLSInvalid("the client key does not belong to the client certificate")
    return EngineTLS(ca=ca + "\n", cert=cert + "\n", key=key + "\n")


def check_engine_access(driver: str, base_url: str, tls: EngineTLS | None, *, allow_insecure: bool) -> None:
    """Refuse a Docker (or Swarm) region that would reach its engine over the network without TLS."""
    if driver not in ("docker", "swarm") or not over_network(base_url):
        return
    if tls is None and not allow_insecure:
        raise EngineTLSInvalid(
            f"{base_url} is reached over the network: give the engine's CA, a client certificate and its key "
            "(--tls-ca, --tls-cert, --tls-key), or set BSN_ALLOW_INSECURE_ENGINES=true for development"
        )


_dir_lock = threading.Lock()
_dir: Path | None = None


def tls_files(tls: EngineTLS) -> tuple[str, str, str]:
    """Paths of (ca, cert, key) files holding ``tls``, readable by this user only."""
    global _dir
    with _dir_lock:
        if _dir is None or not _dir.is_dir():
            _dir = Path(tempfile.mkdtemp(prefix="bsn-engine-tls-"))  # mode 0700
        folder = _dir / tls.fingerprint
        paths = tuple(str(folder / name) for name in ("ca.pem", "cert.pem", "key.pem"))
        if not folder.is_dir():
            staging = Path(tempfile.mkdtemp(dir=_dir))
            for name, text in (("ca.pem", tls.ca), ("cert.pem", tls.cert), ("key.pem", tls.key)):
                fd = os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(text)
            staging.rename(folder)
        return paths  # type: ignore[return-value]

"""Ed25519 keys and signatures, carried as base64 (see docs/ledger-protocol.md "Keys").

Public keys are base64 of the 32 raw bytes, private keys base64 of the 32-byte seed,
signatures base64 of 64 bytes; standard alphabet with padding, decoded strictly.
Works with cryptography >= 38 (Debian bookworm's python3-cryptography).

Verification asks libsodium first (PyNaCl; Debian's python3-nacl in the node image) and
OpenSSL (cryptography) only when libsodium says no. libsodium verifies the same equation
about 1.6 times as fast as OpenSSL here (docs/benchmarks.md) and is stricter -- it also
refuses non-canonical and small-order keys and small-order R -- so whatever it accepts,
OpenSSL accepts too; asking OpenSSL before saying "invalid" keeps the set of accepted
signatures exactly OpenSSL's, which every chain so far was verified with (a chain that
replays today replays the same way). Both release the GIL while they compute.
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

try:
    from nacl.bindings import crypto_sign_open as _sodium_open
    from nacl.exceptions import CryptoError as _SodiumError
except ImportError:  # no PyNaCl: OpenSSL alone (the same answers, slower)
    _sodium_open = None
    _SodiumError = Exception

KEY_BYTES = 32
SIG_BYTES = 64


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, length: int | None = None) -> bytes:
    """Strict base64 (standard alphabet, padding); ValueError when invalid or wrong length."""
    if not isinstance(text, str):
        raise ValueError("expected a base64 string")
    try:
        # What base64.b64decode(validate=True) does on Python 3.11+, without its wrapper.
        raw = binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not valid base64") from None
    if length is not None and len(raw) != length:
        raise ValueError(f"expected {length} bytes, got {len(raw)}")
    return raw


def generate_private_key() -> str:
    """A new private key: base64 of a random 32-byte seed."""
    return b64encode(_seed(Ed25519PrivateKey.generate()))


def _seed(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@lru_cache(maxsize=64)
def _private(private_key_b64: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(b64decode(private_key_b64, KEY_BYTES))


@lru_cache(maxsize=4096)
def _public_raw(public_key_b64: str) -> bytes:
    return b64decode(public_key_b64, KEY_BYTES)


@lru_cache(maxsize=4096)
def _public(public_key_b64: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_public_raw(public_key_b64))


def public_key_of(private_key_b64: str) -> str:
    """The base64 public key for a base64 private key (seed)."""
    return b64encode(_private(private_key_b64).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def check_public_key(public_key_b64: str) -> None:
    """Raise ValueError unless this is a usable base64 Ed25519 public key."""
    _public(public_key_b64)


def sign(private_key_b64: str, data: bytes) -> str:
    """Base64 Ed25519 signature of ``data``."""
    return b64encode(_private(private_key_b64).sign(data))


def verify_raw(public_key_b64: str, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` (64 raw bytes) is valid for ``data`` under the key."""
    if _sodium_open is not None and len(signature) == SIG_BYTES:
        try:
            _sodium_open(signature + data, _public_raw(public_key_b64))
            return True
        except (_SodiumError, ValueError, TypeError):
            pass  # OpenSSL has the final word (see the module docstring)
    try:
        _public(public_key_b64).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify(public_key_b64: str, signature_b64: str, data: bytes) -> bool:
    """True when the base64 signature is valid for ``data`` under the base64 key."""
    try:
        signature = b64decode(signature_b64, SIG_BYTES)
    except ValueError:
        return False
    return verify_raw(public_key_b64, signature, data)

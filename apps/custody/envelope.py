"""Envelope encryption for custodied keys: pure functions, no database (docs/custody.md).

Two layers, both AES-256-GCM from ``cryptography`` (authenticated: a flipped bit, a
swapped row or a wrong key is an error, never garbage):

- a master key (settings) wraps a tenant's data key; the associated data binds the
  wrapped key to its tenant and master key id, so a wrapped key copied to another tenant
  or relabelled with another id does not open;
- the data key encrypts each private key (the 32-byte Ed25519 seed); the associated data
  binds it to the app user's id and public key, so ciphertexts cannot be swapped between
  users.

Stored values are ``nonce (12 random bytes) || ciphertext+tag``. Random 96-bit nonces are
safe far beyond the number of keys a tenant will ever hold under one data key (NIST
SP 800-38D: up to 2^32 encryptions per key).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12
KEY_BYTES = 32
_WRAP_AAD = b"bsn custody data key v1|"
_SEAL_AAD = b"bsn custody private key v1|"


class MasterKeyMissing(Exception):
    """The master key a data key is wrapped with is not configured."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"master key {key_id!r} is not configured")
        self.key_id = key_id


class Unreadable(Exception):
    """A stored value does not authenticate: altered, moved to another row, or a wrong key."""


def derived_master_key(secret_key: str) -> tuple[str, bytes]:
    """A master key entry for the embedded default: HKDF-SHA256 of a Django secret key, named
    ``sk-<8 hex of its SHA-256>`` so that keys derived from old secret keys keep their own ids."""
    key = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"bsn custody master v1").derive(
        secret_key.encode()
    )
    return f"sk-{hashlib.sha256(key).hexdigest()[:8]}", key


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def _encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _decrypt(key: bytes, stored: bytes, aad: bytes) -> bytes:
    stored = bytes(stored)
    if len(stored) < NONCE_BYTES + 16:
        raise Unreadable("too short to be a sealed value")
    try:
        return AESGCM(key).decrypt(stored[:NONCE_BYTES], stored[NONCE_BYTES:], aad)
    except InvalidTag:
        raise Unreadable("authentication failed") from None


def _wrap_aad(tenant_id: str, key_id: str) -> bytes:
    return _WRAP_AAD + f"{tenant_id}|{key_id}".encode()


def _master(ring: Sequence[tuple[str, bytes]], key_id: str) -> bytes:
    for candidate, key in ring:
        if candidate == key_id:
            return key
    raise MasterKeyMissing(key_id)


def wrap(ring: Sequence[tuple[str, bytes]], tenant_id: str, data_key: bytes) -> tuple[str, bytes]:
    """``(master key id, wrapped)`` under the ring's first (newest) master key."""
    key_id, master = ring[0]
    return key_id, _encrypt(master, data_key, _wrap_aad(tenant_id, key_id))


def unwrap(ring: Sequence[tuple[str, bytes]], tenant_id: str, key_id: str, wrapped: bytes) -> bytes:
    """The data key; MasterKeyMissing if ``key_id`` is not in the ring, Unreadable if it does not open."""
    return _decrypt(_master(ring, key_id), wrapped, _wrap_aad(tenant_id, key_id))


def _seal_aad(user_id: str, public_key: str) -> bytes:
    return _SEAL_AAD + f"{user_id}|{public_key}".encode()


def seal(data_key: bytes, user_id: str, public_key: str, seed: bytes) -> bytes:
    return _encrypt(data_key, seed, _seal_aad(user_id, public_key))


def unseal(data_key: bytes, user_id: str, public_key: str, sealed: bytes) -> bytes:
    return _decrypt(data_key, sealed, _seal_aad(user_id, public_key))

"""Ed25519 keys the control plane holds for apps (admin key) and nodes (node keys).

Keys use the ledger's own format (docs/ledger-protocol.md "Keys"): public keys as base64
of the 32 raw bytes, private keys as base64 of the 32-byte seed. Private keys are kept
only as ``encrypt_secret`` ciphertext and decrypted at the moment they are used (signing
a `_config` transaction, building a node's environment) — never logged, never serialised.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.common.crypto import decrypt_secret, encrypt_secret
from bsn.ledger.crypto import b64decode, check_public_key, generate_private_key, public_key_of


@dataclass(frozen=True)
class StoredKey:
    """A freshly generated key as stored: public part and encrypted private part."""

    public_key: str
    private_key_encrypted: str

    def __repr__(self) -> str:  # the ciphertext is not secret, but keep logs short
        return f"StoredKey(public_key={self.public_key!r})"


def key_generate() -> StoredKey:
    private = generate_private_key()
    return StoredKey(public_key=public_key_of(private), private_key_encrypted=encrypt_secret(private))


def key_private(encrypted: str) -> str:
    """The base64 private key (seed) for a stored ciphertext. Use it, do not keep it."""
    if not encrypted:
        raise ValueError("no private key stored")
    return decrypt_secret(encrypted)


# Curve25519 in Edwards form (RFC 8032 section 5.1).
_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _decode_point(raw: bytes) -> tuple[int, int] | None:
    """RFC 8032 5.1.3 point decoding; None if the 32 bytes are not a curve point."""
    y = int.from_bytes(raw, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = (u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P)) % _P
    if (v * x * x - u) % _P != 0:
        if (v * x * x + u) % _P != 0:
            return None
        x = (x * _SQRT_M1) % _P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y


def _double(point: tuple[int, int]) -> tuple[int, int]:
    x, y = point
    xx, yy, xy = x * x % _P, y * y % _P, x * y % _P
    dxxyy = _D * xx * yy % _P
    return (2 * xy * pow(1 + dxxyy, _P - 2, _P)) % _P, ((yy + xx) * pow(1 - dxxyy, _P - 2, _P)) % _P


def public_key_valid(public_key: str) -> bool:
    """True for base64 (standard, padded) of 32 bytes encoding a usable Ed25519 public key:
    a point on the curve that is not of small order (those verify forged signatures)."""
    try:
        check_public_key(public_key)
        raw = b64decode(public_key, 32)
    except (ValueError, TypeError):
        return False
    point = _decode_point(raw)
    if point is None:
        return False
    for _ in range(3):  # [8]P is the identity exactly for the eight small-order points
        point = _double(point)
    return point != (0, 1)

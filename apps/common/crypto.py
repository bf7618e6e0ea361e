"""Secrets at rest: Fernet with keys derived from the Django secret key (HKDF-SHA256).

``encrypt_secret`` uses settings.SECRET_KEY; ``decrypt_secret`` also tries every key in
settings.SECRET_KEY_FALLBACKS, so a rotated SECRET_KEY keeps old secrets readable while
the old key is listed there. A secret no key opens raises ``SecretUnreadable`` (a
``ValueError``) naming the cause instead of returning garbage.
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

_INFO = b"bsn secrets at rest v1"


class SecretUnreadable(ValueError):
    """A stored secret cannot be decrypted (SECRET_KEY changed, or the value is corrupt)."""


@functools.lru_cache(maxsize=16)
def _fernet(secret_key: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _keys() -> list[Fernet]:
    return [_fernet(k) for k in (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ()))]


def derive_key(purpose: bytes, context: str) -> bytes:
    """32 bytes for ``purpose`` and ``context`` (e.g. one warm node's claim key), derived from
    settings.SECRET_KEY (HKDF-SHA256): the same on every worker, stored nowhere. A rotated
    SECRET_KEY derives other keys; a caller that must still open old ones has its way back."""
    info = purpose + b"\x00" + context.encode("utf-8")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(settings.SECRET_KEY.encode())


def encrypt_secret(plaintext: str) -> str:
    """Encrypt (authenticated, random IV); the result is ASCII, safe for a text column."""
    return _fernet(settings.SECRET_KEY).encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt_secret(token: str) -> str:
    try:
        return MultiFernet(_keys()).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise SecretUnreadable(
            "a stored secret cannot be decrypted: SECRET_KEY changed (keep the old one in "
            "SECRET_KEY_FALLBACKS) or the value is corrupt"
        ) from None

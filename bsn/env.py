"""Small typed readers for environment variables.

The only place (with settings) that reads ``os.environ``. Each reader fails fast with
``ImproperlyConfigured`` on a value it cannot parse, and ``*_FILE`` variants let secrets
come from files (Docker/Kubernetes secrets).
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} cannot be read: {exc}") from exc
    return os.environ.get(name)


def env_str(name: str, default: str | None = None) -> str:
    value = _raw(name)
    if value is None:
        if default is None:
            raise ImproperlyConfigured(f"environment variable {name} is required")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true/false)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from exc
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} must be at least {minimum}")
    return number


def env_float(name: str, default: float) -> float:
    value = _raw(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of {sorted(choices)}")
    return value


def env_keyring(name: str, *, key_bytes: int = 32) -> list[tuple[str, bytes]]:
    """Named keys ``id:base64`` separated by commas or newlines, in the order given.

    For keys that wrap other keys (``BSN_CUSTODY_MASTER_KEYS``): each id names its key in
    what it wraps, so several can be configured at once while one is rotated out. Ids are
    1-32 letters, digits, ``.``, ``_`` or ``-``; each key is base64 of ``key_bytes`` bytes.
    """
    import base64
    import binascii
    import re

    value = _raw(name)
    if value is None or not value.strip():
        return []
    ring: list[tuple[str, bytes]] = []
    for item in (part.strip() for part in value.replace("\n", ",").split(",")):
        if not item:
            continue
        key_id, sep, encoded = item.partition(":")
        key_id = key_id.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", key_id):
            raise ImproperlyConfigured(f"{name}: each entry is '<id>:<base64 key>' with a 1-32 character id")
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ImproperlyConfigured(f"{name}: the key of '{key_id}' is not base64") from None
        if len(raw) != key_bytes:
            raise ImproperlyConfigured(f"{name}: the key of '{key_id}' has {len(raw)} bytes, not {key_bytes}")
        if any(key_id == seen for seen, _ in ring):
            raise ImproperlyConfigured(f"{name}: the id '{key_id}' is given twice")
        ring.append((key_id, raw))
    return ring

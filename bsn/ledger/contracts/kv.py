"""The ``kv`` contract: put, get and delete JSON values by string key."""

from __future__ import annotations

from typing import Any

MAX_KEY_LENGTH = 256

_MISSING = object()


class ContractError(ValueError):
    """An operation is invalid for this contract (the client gets a 400)."""


def validate_key(key: str) -> None:
    if not key:
        raise ContractError("key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ContractError(f"key is longer than {MAX_KEY_LENGTH} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise ContractError("key must not contain control characters")


class KVContract:
    """A plain key/value map; records are ``{"op": "put"|"delete", "key", "value"?}``."""

    name = "kv"

    def __init__(self) -> None:
        self._state: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._state)

    # Building records (validation happens here, before anything is logged).

    def put_record(self, key: str, value: Any) -> dict[str, Any]:
        validate_key(key)
        return {"op": "put", "key": key, "value": value}

    def delete_record(self, key: str) -> dict[str, Any] | None:
        """The record deleting ``key``, or None when there is nothing to delete."""
        validate_key(key)
        if key not in self._state:
            return None
        return {"op": "delete", "key": key}

    # Applying logged records (must never fail for a record built above).

    def apply(self, record: dict[str, Any]) -> None:
        op = record.get("op")
        if op == "put":
            self._state[record["key"]] = record["value"]
        elif op == "delete":
            self._state.pop(record["key"], None)
        else:
            raise ContractError(f"unknown kv operation {op!r}")

    # Queries.

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value of ``key``; raises KeyError when absent and no default is given."""
        validate_key(key)
        if default is _MISSING:
            return self._state[key]
        return self._state.get(key, default)

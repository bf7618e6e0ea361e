"""What every contract template shares: argument checking, the execution context.

A contract is deterministic: ``execute`` sees only its arguments, the signer, the block
(height, timestamp), the transaction id and the contract's own state as of that point in
the chain, and returns ``(result, writes, events)`` — ``writes`` a list of ``(key,
value-or-None)``, ``events`` a list of ``{"name", "payload"}`` — or raises
ContractFailure, which leaves state unchanged and gives the receipt status ``failed``.
``validate`` checks arguments without state (a failure there is the ``bad_arguments``
rejection, before ordering).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

USER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_INT = 2**63 - 1  # amounts and balances stay within a signed 64-bit integer
MAX_KEY = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Write = tuple[str, Any]
_UNSET = object()


class BadArguments(ValueError):
    """Arguments are invalid whatever the state (rejection ``bad_arguments``)."""


class ContractFailure(Exception):
    """A contract rule fails at execution: included in the block, receipt ``failed``."""


class Context:
    """What a transaction may see while it executes."""

    __slots__ = ("_read", "height", "signer", "timestamp", "tx_id")

    def __init__(self, signer: str, height: int, timestamp: int, tx_id: str, read: Callable[[str], Any]) -> None:
        self.signer = signer
        self.height = height
        self.timestamp = timestamp  # the block's timestamp (ms)
        self.tx_id = tx_id
        self._read = read

    def get(self, key: str) -> Any:
        """The current value of ``key`` in this contract's state, or None."""
        return self._read(key)


def event(name: str, payload: Any) -> dict[str, Any]:
    return {"name": name, "payload": payload}


# Argument checks: each raises BadArguments with a message naming the field.


def exact(args: dict[str, Any], required: tuple[str, ...]) -> None:
    if args.keys() != set(required):
        missing = sorted(set(required) - args.keys())
        extra = sorted(args.keys() - set(required))
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(extra)}")
        raise BadArguments(f"arguments must be exactly {{{', '.join(required)}}} ({'; '.join(parts)})")


def text(args: dict[str, Any], name: str, *, max_len: int = MAX_KEY, pattern: re.Pattern[str] | None = None) -> str:
    value = args[name]
    if type(value) is not str or not value:
        raise BadArguments(f"{name} must be a non-empty string")
    if len(value) > max_len:
        raise BadArguments(f"{name} is longer than {max_len} characters")
    if _CONTROL.search(value):
        raise BadArguments(f"{name} must not contain control characters")
    if pattern is not None and not pattern.match(value):
        raise BadArguments(f"{name} must match {pattern.pattern}")
    return value


def user(args: dict[str, Any], name: str) -> str:
    value = args[name]
    if type(value) is not str or not USER_RE.match(value):
        raise BadArguments(f"{name} must be a user name matching {USER_RE.pattern}")
    return value


def amount(args: dict[str, Any], name: str = "amount") -> int:
    value = args[name]
    if type(value) is not int or not 0 < value <= MAX_INT:
        raise BadArguments(f"{name} must be a positive integer (at most {MAX_INT})")
    return value


def text_list(args: dict[str, Any], name: str, *, max_items: int = 100) -> list[str]:
    value = args[name]
    if type(value) is not list or len(value) > max_items:
        raise BadArguments(f"{name} must be a list of at most {max_items} strings")
    for item in value:
        if type(item) is not str or not item or len(item) > MAX_KEY:
            raise BadArguments(f"{name} must hold non-empty strings of at most {MAX_KEY} characters")
    return value


class Contract:
    """Base class: subclasses set ``name``, ``functions`` (writes) and ``queries``.

    ``functions`` / ``queries`` map a function name to its argument names; the
    ``check_<function>`` method (dots become underscores) validates further.
    """

    name = ""
    functions: dict[str, tuple[str, ...]] = {}
    queries: dict[str, tuple[str, ...]] = {}
    keeps_history = False  # the core then indexes every write of this contract by key
    # Only the platform's own tenant may deploy it (the control plane enforces this).
    platform_only = False

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        if params:
            raise ValueError(f"contract {self.name!r} takes no parameters")

    def _method(self, prefix: str, function: str) -> Callable[..., Any] | None:
        key = (prefix, function)
        methods = self.__dict__.setdefault("_methods", {})  # per instance: bound methods
        found = methods.get(key, _UNSET)
        if found is _UNSET:
            found = methods[key] = getattr(self, prefix + function.replace(".", "_"), None)
        return found

    def validate(self, function: str, args: dict[str, Any], signer: str) -> None:
        """Stateless checks of a write function's arguments; raises BadArguments."""
        exact(args, self.functions[function])
        check = self._method("check_", function)
        if check is not None:
            check(args, signer)

    def execute(self, ctx: Context, function: str, args: dict[str, Any]) -> tuple[Any, list[Write], list[dict]]:
        return self._method("do_", function)(ctx, args)

    def validate_query(self, function: str, args: dict[str, Any]) -> None:
        exact(args, self.queries[function])
        check = self._method("check_", function)
        if check is not None:
            check(args, None)

    def query(self, read: Callable[[str], Any], function: str, args: dict[str, Any]) -> Any:
        """Answer a read-only function from the current state (after validate_query)."""
        return self._method("q_", function)(read, args)

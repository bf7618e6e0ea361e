"""Reads shared within one unit of work (a node step).

A node step asks for the same rows several times: the installation id (its spec, its
configured spec, its network's labels), the ordering members and cluster (the service's
fast check, the node's etcd endpoints, the members to attach). Inside ``work_scope()`` each
is read once; outside one (a request, a reconcile pass, a thread the step starts) every
call reads again. Never across units of work: each reads its own, so web and worker
processes agree after any change, and a test that flushes the tables sees fresh rows.
A helper written here (not functools.cache or a cache backend) because what it keeps must
end with the unit of work, which a ContextVar set and reset around the step gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

_memo: ContextVar[dict[str, Any] | None] = ContextVar("work_scope", default=None)


@contextmanager
def work_scope() -> Iterator[None]:
    """Within it, ``scoped(key, load)`` loads each key once."""
    token = _memo.set({})
    try:
        yield
    finally:
        _memo.reset(token)


def scoped(key: str, load: Callable[[], T]) -> T:
    """``load()``, once per ``work_scope()`` for ``key``; every time outside one."""
    memo = _memo.get()
    if memo is None:
        return load()
    if key not in memo:
        memo[key] = load()
    return memo[key]


def forget(*keys: str) -> None:
    """The next ``scoped`` of these keys reads again (the unit of work changed them)."""
    memo = _memo.get()
    if memo is not None:
        for key in keys:
            memo.pop(key, None)

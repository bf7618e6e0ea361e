"""Metering fixtures: the gateway's (a tenant app whose node is a SimLedger) and a clean counter store."""

from __future__ import annotations

import pytest

from apps.gateway import ratelimit
from apps.metering import counters
from tests.gateway.conftest import alice, alice_key, app, builtin_framework, sim  # noqa: F401 - fixtures


@pytest.fixture(autouse=True)
def fresh_counters():
    """A store built from the current settings, and no counts left from another test."""
    counters.reset_store()
    ratelimit.reset_store()
    store = counters.store()
    if isinstance(store, counters.RedisCounters):
        for key in store.client.scan_iter(match=f"{store.prefix}*", count=500):
            store.client.delete(key)
    yield store
    counters.reset_store()
    ratelimit.reset_store()

"""Custody tests against a SimLedger node (the gateway tests' fixtures) and fixed master keys."""

from __future__ import annotations

import base64
import os

import pytest

from tests.gateway.conftest import alice, alice_key, app, builtin_framework, sim  # noqa: F401 - fixtures


def master(key_id: str) -> tuple[str, bytes]:
    """A fresh master key entry as BSN_CUSTODY_MASTER_KEYS holds it."""
    return key_id, os.urandom(32)


def ring_setting(*entries: tuple[str, bytes]) -> str:
    """The environment variable's text for ``entries`` (newest first)."""
    return ",".join(f"{key_id}:{base64.b64encode(key).decode()}" for key_id, key in entries)


@pytest.fixture
def k1(settings):
    """Master key k1 configured alone (the ring the tests start from)."""
    entry = master("k1")
    settings.BSN_CUSTODY_MASTER_KEYS = [entry]
    return entry

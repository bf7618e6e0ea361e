"""Envelope encryption as properties (Hypothesis), and the master-key setting's reader."""

from __future__ import annotations

import base64
import os

import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.custody import envelope
from bsn.env import env_keyring

RING = [("new", os.urandom(32)), ("old", os.urandom(32))]
ids = st.uuids().map(str)
seeds = st.binary(min_size=32, max_size=32)


@settings(max_examples=60, deadline=None)
@given(tenant=ids, data_key=seeds, position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_a_wrapped_data_key_opens_only_unchanged_for_its_tenant(tenant, data_key, position, bit):
    key_id, wrapped = envelope.wrap(RING, tenant, data_key)
    assert key_id == "new" and envelope.unwrap(RING, tenant, key_id, wrapped) == data_key
    flipped = bytearray(wrapped)
    flipped[position % len(flipped)] ^= 1 << bit
    with pytest.raises(envelope.Unreadable):
        envelope.unwrap(RING, tenant, key_id, bytes(flipped))
    with pytest.raises(envelope.Unreadable):  # another tenant's row
        envelope.unwrap(RING, tenant[::-1], key_id, wrapped)
    with pytest.raises(envelope.Unreadable):  # relabelled with the other master key's id
        envelope.unwrap(RING, tenant, "old", wrapped)
    with pytest.raises(envelope.MasterKeyMissing):
        envelope.unwrap(RING[1:], tenant, key_id, wrapped)


@settings(max_examples=60, deadline=None)
@given(user=ids, other=ids, seed=seeds, position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_a_sealed_private_key_opens_only_unchanged_for_its_user(user, other, seed, position, bit):
    data_key = envelope.new_data_key()
    sealed = envelope.seal(data_key, user, "pub", seed)
    assert envelope.unseal(data_key, user, "pub", sealed) == seed
    assert sealed != envelope.seal(data_key, user, "pub", seed), "a fresh nonce each time"
    flipped = bytearray(sealed)
    flipped[position % len(flipped)] ^= 1 << bit
    for args in ((user, "pub", bytes(flipped)), (user, "other-pub", sealed), (user, "pub", sealed[:20])):
        with pytest.raises(envelope.Unreadable):
            envelope.unseal(data_key, *args)
    if other != user:
        with pytest.raises(envelope.Unreadable):
            envelope.unseal(data_key, other, "pub", sealed)
    with pytest.raises(envelope.Unreadable):
        envelope.unseal(envelope.new_data_key(), user, "pub", sealed)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_the_keyring_reader_keeps_order_and_reads_files(monkeypatch, tmp_path):
    a, b = os.urandom(32), os.urandom(32)
    monkeypatch.setenv("BSN_TEST_RING", f"k2:{_b64(a)}, k1:{_b64(b)}")
    assert env_keyring("BSN_TEST_RING") == [("k2", a), ("k1", b)]
    path = tmp_path / "ring"
    path.write_text(f"k2:{_b64(a)}\nk1:{_b64(b)}\n")
    monkeypatch.delenv("BSN_TEST_RING")
    monkeypatch.setenv("BSN_TEST_RING_FILE", str(path))
    assert env_keyring("BSN_TEST_RING") == [("k2", a), ("k1", b)]
    monkeypatch.delenv("BSN_TEST_RING_FILE")
    assert env_keyring("BSN_TEST_RING") == []


@pytest.mark.parametrize(
    "value, says",
    [
        ("nokey", "'<id>:<base64 key>'"),
        (f"bad id!:{_b64(bytes(32))}", "'<id>:<base64 key>'"),
        ("k1:not-base64!", "not base64"),
        (f"k1:{_b64(bytes(16))}", "16 bytes, not 32"),
        (f"k1:{_b64(bytes(32))},k1:{_b64(bytes(32))}", "given twice"),
    ],
)
def test_a_bad_keyring_fails_fast_naming_the_variable(monkeypatch, value, says):
    monkeypatch.setenv("BSN_TEST_RING", value)
    with pytest.raises(ImproperlyConfigured) as excinfo:
        env_keyring("BSN_TEST_RING")
    assert "BSN_TEST_RING" in str(excinfo.value) and says in str(excinfo.value)


def test_settings_read_the_master_keys_from_a_file_and_refuse_a_bad_one_at_start_up(tmp_path):
    """A fresh process, as a deployment starts it: BSN_CUSTODY_MASTER_KEYS_FILE (one a line)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BSN_", "DATABASE_URL", "CELERY_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "bsn.settings", "BSN_DATA_DIR": str(tmp_path / "data")})
    a, b = os.urandom(32), os.urandom(32)
    ring = tmp_path / "custody-master-keys"
    ring.write_text(f"k2:{_b64(a)}\nk1:{_b64(b)}\n")
    code = (
        "import json, django; django.setup(); from django.conf import settings\n"
        "print(json.dumps([[i, k.hex()] for i, k in settings.BSN_CUSTODY_MASTER_KEYS]))"
    )

    def start(**extra):
        return subprocess.run(
            [sys.executable, "-c", code], cwd=root, env={**env, **extra}, capture_output=True, text=True, timeout=120
        )

    ok = start(BSN_CUSTODY_MASTER_KEYS_FILE=str(ring))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.splitlines()[-1]) == [["k2", a.hex()], ["k1", b.hex()]]
    bad = start(BSN_CUSTODY_MASTER_KEYS=f"k1:{_b64(bytes(31))}")
    assert bad.returncode != 0 and "ImproperlyConfigured" in bad.stderr and "BSN_CUSTODY_MASTER_KEYS" in bad.stderr

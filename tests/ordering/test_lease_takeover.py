"""Failover does not depend on the proposer's lease (docs/ordering.md, "Leases").

etcd checks no permission on lease keep-alives (and lets any user list every lease), so
another app's credential can keep a dead proposer's lease, and with it ``P/proposer``,
alive forever. These tests do that from app "b"'s credential against app "a" on an etcd
with auth on, and show app "a" still fails over.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bsn.ledger.etcd_http import EtcdAuthError, EtcdClient, EtcdError, op_put
from bsn.ledger.ordering.etcd import LEASE_TTL, EtcdOrderer
from tests.ordering.conftest import FakeCore, LeasePinner, envelope, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
TAKEOVER_S = 8  # the node default is 10; shorter keeps the test quick


@pytest.fixture
def app_a(etcd_auth):
    """(prefix, start(node_id, **config)) for app "a"; started orderers are stopped at the end."""
    prefix = f"{etcd_auth.creds['a']['prefix']}{uuid.uuid4().hex}/"
    made: list[EtcdOrderer] = []

    def start(node_id: str, **overrides) -> tuple[EtcdOrderer, FakeCore]:
        config = {
            "node_id": node_id,
            "etcd_endpoints": [etcd_auth.endpoint],
            "etcd_user": etcd_auth.creds["a"]["user"],
            "etcd_password": etcd_auth.creds["a"]["password"],
            "etcd_prefix": prefix,
            "block_max_wait_ms": 5,
            "etcd_takeover_s": TAKEOVER_S,
            **overrides,
        }
        core = FakeCore(node_id)
        orderer = EtcdOrderer(config)
        orderer.start(core)
        made.append(orderer)
        return orderer, core

    yield prefix, start
    for orderer in made:
        orderer.stop()


def _proposer(client: EtcdClient, prefix: str):
    return client.get(f"{prefix}proposer")


def test_a_dead_proposer_whose_lease_another_app_pins_is_still_replaced(etcd_auth, app_a):
    prefix, start = app_a
    a, b = etcd_auth.client("a"), etcd_auth.client("b")
    with pytest.raises(EtcdAuthError, match="permission denied"):
        b.get(f"{prefix}proposer")  # app b cannot touch app a's keys ...

    creds = etcd_auth.creds["a"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.ordering.orderer_proc",
            etcd_auth.endpoint,
            prefix,
            "doomed",
            creds["user"],
            creds["password"],
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "PROPOSER"
        survivor, core = start("survivor")
        survivor.submit([envelope("before")])
        assert core.wait_for(lambda: core.tx_nonces() == ["before"])
        assert core.block(1)["header"]["proposer"] == "doomed"
        held = _proposer(a, prefix)
        assert held.value == b"doomed" and held.lease

        with LeasePinner(b) as pinner:
            # ... but it can keep app a's proposer lease alive: etcd checks no permission there.
            assert b.lease_keepalive(held.lease) > 0
            assert wait_until(lambda: held.lease in pinner.kept, 5)

            proc.kill()
            proc.wait(5)
            survivor.submit([envelope("during")])  # acknowledged into pending; the proposer is dead
            # Past its TTL the dead proposer's lease, and so its key, still live: the lease
            # alone would block failover for as long as the attacker likes.
            time.sleep(LEASE_TTL + 1.5)
            still = _proposer(a, prefix)
            assert (still.value, still.lease) == (b"doomed", held.lease)
            assert core.tx_nonces() == ["before"]

            # The survivor sees pending work and no block for TAKEOVER_S: it takes over.
            assert core.wait_for(lambda: core.tx_nonces() == ["before", "during"], timeout=30)
            assert survivor.is_proposer
            assert core.block(2)["header"]["proposer"] == "survivor"
            now = _proposer(a, prefix)
            assert now.value == b"survivor" and now.lease not in (0, held.lease)

            # Pinning the new proposer's lease does not matter while it works.
            assert wait_until(lambda: now.lease in pinner.kept, 5)
            survivor.submit([envelope("after")])
            assert core.wait_for(lambda: core.tx_nonces() == ["before", "during", "after"])
    finally:
        proc.kill()
        proc.wait(5)


def test_a_live_proposer_that_stalls_is_deposed_and_stops(etcd_auth, app_a):
    """Deposing is safe: the old proposer sees its key taken, stops, and cannot commit."""
    prefix, start = app_a
    stalled, stalled_core = start("stalled")
    assert wait_until(lambda: stalled.is_proposer, 5)
    stalled._propose_once = lambda: False  # alive and keeping its lease, but never proposes
    other, core = start("other")
    other.submit([envelope("x")])
    assert core.wait_for(lambda: core.tx_nonces() == ["x"], timeout=30)
    assert other.is_proposer
    assert wait_until(lambda: not stalled.is_proposer, 5)  # it saw P/proposer change
    assert stalled_core.wait_for(lambda: stalled_core.tx_nonces() == ["x"])  # and follows the new one
    assert etcd_auth.client("a").get(f"{prefix}proposer").value == b"other"


def test_a_stopping_proposer_hands_over_even_when_its_lease_cannot_be_revoked(etcd_auth, app_a):
    """App b attaches a key of its own to app a's lease: a revoke then needs write permission
    on b's key, which a lacks. Stopping deletes P/proposer first, so the handover is still
    immediate."""
    _, start = app_a
    first, _ = start("first")
    assert wait_until(lambda: first.is_proposer, 5)
    lease = first._lease
    b = etcd_auth.client("b")
    b.txn([], [op_put(f"{etcd_auth.creds['b']['prefix']}hook-{uuid.uuid4().hex}", "x", lease=lease)])
    with pytest.raises(EtcdError, match="permission denied"):
        etcd_auth.client("a").lease_revoke(lease)

    second, core = start("second", etcd_takeover_s=3600)  # no take-over: the handover does it
    assert wait_until(lambda: second._proposer_seen == "first", 5)
    with LeasePinner(b) as pinner:  # the lease never expires either
        assert wait_until(lambda: lease in pinner.kept, 5)
        first.stop()
        assert wait_until(lambda: second.is_proposer, 10)
        assert b.lease_keepalive(lease) > 0  # the old lease still lives: the handover did not need it
        second.submit([envelope("y")])
        assert core.wait_for(lambda: core.tx_nonces() == ["y"])

"""The whole DCEP flow through the REST API against a real tier-1 node."""

from __future__ import annotations

import pytest

from apps.dcep.selectors import deep_checks
from tests.api.conftest import assert_problem

pytestmark = pytest.mark.django_db(transaction=True)


def open_wallet(client, tier=2, kind="personal", holder_tenant=None, name="holder"):
    body = {"holder_name": name, "tier": tier, "kind": kind}
    if holder_tenant:
        body["holder_tenant"] = holder_tenant
    resp = client.post("wallets", body)
    assert resp.status_code == 201, resp.content
    return resp.json()["id"]


def test_issue_exchange_pay_settle_prove(tier1, clients):
    cb, a, b = clients["cb"], clients["a"], clients["b"]
    resp = cb.post("issuances", {"operator": "bank-a", "amount": 1_000_000})
    assert resp.status_code == 201, resp.content
    issued = resp.json()
    assert issued["receipt"]["height"] >= 1 and len(issued["receipt"]["tx_id"]) == 64
    assert cb.post("issuances", {"operator": "bank-b", "amount": 500_000}).status_code == 201

    wa, wb = open_wallet(a), open_wallet(b)
    assert a.post("exchanges", {"wallet": wa, "amount": 300_000}).status_code == 201
    pay = a.post("payments", {"from_wallet": wa, "to_wallet": wb, "amount": 120_000, "memo": "rent"})
    assert pay.status_code == 201, pay.content
    transfer = pay.json()
    assert transfer["from_operator"] == "bank-a" and transfer["to_operator"] == "bank-b"

    wallet_b = b.get(f"wallets/{wb}").json()
    assert (wallet_b["balance"], wallet_b["available"], wallet_b["held"]) == (120_000, 120_000, 0)

    supply = cb.get("supply").json()
    assert supply["ok"], supply["checks"]
    assert supply["operators"]["bank-a"]["unsettled_out"] == 120_000

    resp = cb.post("settlements")
    assert resp.status_code == 202, resp.content
    from apps.dcep.settlement import settlement_run

    batch = settlement_run(resp.json()["id"])
    assert batch.status == "anchored", batch.last_error
    assert batch.positions == {"bank-a": -120_000, "bank-b": 120_000}

    proof = a.get(f"transfers/{transfer['id']}/proof").json()
    assert proof["tree_size"] == 1 and proof["anchor"]["block"]["header"]["height"] == proof["anchor"]["height"]
    supply = cb.get("supply").json()
    assert supply["ok"], supply["checks"]
    assert supply["operators"]["bank-a"]["chain_balance"] == 1_000_000 - 120_000
    assert all(check["ok"] for check in deep_checks())


def test_refusals_and_replays(tier1, clients):
    cb, a = clients["cb"], clients["a"]
    cb.post("issuances", {"operator": "bank-a", "amount": 10_000_000})
    w1, w2 = open_wallet(a, tier=3), open_wallet(a, tier=3)
    a.post("exchanges", {"wallet": w1, "amount": 400_000})
    assert_problem(a.post("payments", {"from_wallet": w1, "to_wallet": w1, "amount": 1}), 400, "same-wallet")
    assert_problem(a.post("payments", {"from_wallet": w1, "to_wallet": w2, "amount": 500_001}), 409, "over-single-cap")
    assert_problem(a.post("payments", {"from_wallet": w2, "to_wallet": w1, "amount": 1}), 409, "insufficient-funds")
    assert_problem(
        a.post("payments", {"from_wallet": w1, "to_wallet": w2, "amount": 1}, key=None), 400, "idempotency-key-required"
    )
    first = a.post("payments", {"from_wallet": w1, "to_wallet": w2, "amount": 100}, key="same")
    again = a.post("payments", {"from_wallet": w1, "to_wallet": w2, "amount": 100}, key="same")
    assert first.status_code == again.status_code == 201
    assert first.content == again.content and again["Idempotent-Replayed"] == "true"
    assert_problem(
        a.post("payments", {"from_wallet": w1, "to_wallet": w2, "amount": 101}, key="same"),
        422,
        "idempotency-key-reused",
    )
    assert a.get(f"wallets/{w2}").json()["balance"] == 100
    assert_problem(a.post("payments", {"from_wallet": w1, "to_wallet": w2, "amount": 1.0}), 400, "invalid")


def test_tampered_batch_is_caught_by_the_audit_and_gives_no_proof(tier1, clients):
    from django.db import connection

    from apps.dcep.settlement import settlement_run

    cb, a, b = clients["cb"], clients["a"], clients["b"]
    cb.post("issuances", {"operator": "bank-a", "amount": 100_000})
    wa, wb = open_wallet(a), open_wallet(b)
    a.post("exchanges", {"wallet": wa, "amount": 50_000})
    transfer = a.post("payments", {"from_wallet": wa, "to_wallet": wb, "amount": 700}).json()
    batch = settlement_run(cb.post("settlements").json()["id"])
    assert all(check["ok"] for check in deep_checks())
    with connection.cursor() as cursor:  # dcep_settlement has no trigger: an insider could do this
        cursor.execute("UPDATE dcep_settlement SET leaf_hashes = %s WHERE id = %s", [b"\x00" * 32, batch.pk])
    failed = [check["name"] for check in deep_checks() if not check["ok"]]
    assert failed == ["settlement batches: stored leaves and root match their transfers"]
    assert_problem(a.get(f"transfers/{transfer['id']}/proof"), 500, "proof-mismatch")

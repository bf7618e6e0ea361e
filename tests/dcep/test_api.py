"""The DCEP API as its users and an attacker use it, against a real tier-1 node.

Roles and kinds of institution, every refusal code of docs/dcep.md (each with its
problem+json shape and the proof that nothing moved), input an attacker would send, holds,
corporate wallets, the transfer list, batches, withdrawals, idempotent replays (also of a
concurrent duplicate on a live server) and query counts of the lists.
"""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg
import pytest
import requests
from django.db import connection
from django.utils import timezone

from apps.dcep.models import Account, IdempotencyRecord, Tier1Op, Transfer
from apps.dcep.selectors import deep_checks
from apps.dcep.services import holds_expire
from apps.dcep.settlement import _claim, settlement_run, settlement_start
from apps.dcep.tier1 import chain_supply
from apps.dcep.tiers import new_wallet_number
from apps.tenants.models import Role, Tenant
from apps.tenants.services import token_issue
from tests.api.conftest import assert_problem, count_queries
from tests.dcep.conftest import Client, _member
from tests.dcep.helpers import created, funded_wallet, issue, money_state, open_wallet

A_FUNDS = 50_000_000
B_FUNDS = 10_000_000


@pytest.fixture
def bank(tier1, clients):
    """Both operator banks funded on tier 1 (bank-a 50,000,000 fen, bank-b 10,000,000)."""
    issue(clients["cb"], "bank-a", A_FUNDS)
    issue(clients["cb"], "bank-b", B_FUNDS)
    return clients


@contextmanager
def unchanged():
    """Nothing of the money moved: accounts field by field, transfers, entries, holds, batches, tier 1."""
    before = money_state()
    yield
    assert money_state() == before


def wallet_of(client, number: str) -> dict:
    return created(client.get(f"wallets/{number}"), 200)


def amounts(client, number: str) -> tuple[int, int, int]:
    """(balance, available, held) of a wallet, as its operator or holder sees it."""
    w = wallet_of(client, number)
    return w["balance"], w["available"], w["held"]


def pay(client, src: str, dst: str, amount: int, **extra) -> dict:
    return created(client.post("payments", {"from_wallet": src, "to_wallet": dst, "amount": amount, **extra}))


def hold(client, src: str, dst: str, amount: int, expires_in_s: int = 3600) -> dict:
    body = {"from_wallet": src, "to_wallet": dst, "amount": amount, "expires_in_s": expires_in_s}
    return created(client.post("holds", body))


def expire(hold_id: str) -> None:
    """Push a hold's expiry into the past (what waiting for it would do)."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE dcep_hold SET expires_at = now() - interval '1 second' WHERE id = %s", [hold_id])


def ledger_ok() -> None:
    assert all(check["ok"] for check in deep_checks()), deep_checks()


# --------------------------------------------------------------------------- roles


@pytest.mark.django_db
@pytest.mark.parametrize("role", list(Role))
def test_reads_need_viewer_and_writes_developer(bank, role):
    a = bank["a"]
    w1, w2 = funded_wallet(a, 1_000_000), open_wallet(a)
    h1, h2 = hold(a, w1, w2, 1_000)["id"], hold(a, w1, w2, 1_000)["id"]
    caller = Client(_member(a.tenant, role))
    for path in ("wallets", f"wallets/{w1}", "transfers", "holds", f"holds/{h1}", "settlements", "institutions"):
        assert caller.get(path).status_code == 200, path

    writes = [
        ("post", "wallets", {"holder_name": "new", "tier": 2, "kind": "personal"}, 201),
        ("post", "exchanges", {"wallet": w2, "amount": 10}, 201),
        ("post", "redemptions", {"wallet": w1, "amount": 10}, 201),
        ("post", "payments", {"from_wallet": w1, "to_wallet": w2, "amount": 10}, 201),
        ("post", "payments/batch", {"payments": [{"from_wallet": w1, "to_wallet": w2, "amount": 10}]}, 201),
        ("post", "holds", {"from_wallet": w1, "to_wallet": w2, "amount": 10, "expires_in_s": 60}, 201),
        ("post", f"holds/{h1}/capture", {"amount": 1}, 200),
        ("post", f"holds/{h2}/void", None, 200),
        ("patch", f"wallets/{w2}", {"tier": 3}, 200),
    ]
    for method, path, body, status in writes:
        if role == Role.VIEWER:
            with unchanged():
                assert_problem(getattr(caller, method)(path, body), 403, "permission-denied")
        else:
            assert getattr(caller, method)(path, body).status_code == status, (role, path)
    ledger_ok()


# --------------------------------------------------------------------------- kinds of institution


@pytest.mark.django_db
def test_each_kind_of_institution_does_only_its_own_part(bank, enterprise):
    cb, a, b, corp = bank["cb"], bank["a"], bank["b"], bank["corp"]
    personal = funded_wallet(a, 1_000_000)
    corporate = funded_wallet(a, 1_000_000, kind="corporate", holder_tenant=enterprise.slug)
    not_allowed = {
        "corp": [
            ("post", "wallets", {"holder_name": "mine", "tier": 2, "kind": "corporate"}),
            ("post", "exchanges", {"wallet": corporate, "amount": 1}),
            ("post", "redemptions", {"wallet": corporate, "amount": 1}),
            ("post", "issuances", {"operator": "bank-a", "amount": 1}),
            ("post", "withdrawals", {"operator": "bank-a", "amount": 1}),
            ("post", "settlements", None),
            ("patch", f"wallets/{corporate}", {"status": "frozen"}),
            ("get", "supply", None),
        ],
        "a": [
            ("post", "issuances", {"operator": "bank-a", "amount": 1}),
            ("post", "withdrawals", {"operator": "bank-b", "amount": 1}),
            ("post", "settlements", None),
            ("get", "supply", None),
        ],
        "cb": [
            ("post", "wallets", {"holder_name": "cb", "tier": 1, "kind": "personal"}),
            ("post", "exchanges", {"wallet": personal, "amount": 1}),
            ("post", "redemptions", {"wallet": personal, "amount": 1}),
        ],
        "stranger": [("get", "supply", None), ("post", "exchanges", {"wallet": personal, "amount": 1})],
    }
    for who, calls in not_allowed.items():
        for method, path, body in calls:
            with unchanged():
                caller = bank[who]
                resp = caller.get(path) if method == "get" else getattr(caller, method)(path, body)
                assert_problem(resp, 403, "not-allowed")

    # Paying from a wallet is its operator's or its corporate holder's business only.
    for who in ("cb", "b", "stranger"):
        with unchanged():
            assert_problem(
                bank[who].post("payments", {"from_wallet": personal, "to_wallet": corporate, "amount": 1}), 404
            )
    with unchanged():
        assert_problem(corp.post("payments", {"from_wallet": personal, "to_wallet": corporate, "amount": 1}), 404)
    assert pay(corp, corporate, personal, 5)["from_operator"] == "bank-a"
    assert pay(a, corporate, personal, 5)["kind"] == "payment"  # its operator may move it too

    # Supply: the central bank and platform staff only.
    assert created(cb.get("supply"), 200)["ok"]
    staff = Client(_member(Tenant.objects.get(kind=Tenant.Kind.PLATFORM)))
    assert created(staff.get("supply"), 200)["issued"] == A_FUNDS + B_FUNDS
    # The central bank sees no wallet, and of the transfers only tier 1.
    assert created(cb.get("wallets"), 200)["count"] == 0
    assert {t["kind"] for t in created(cb.get("transfers"), 200)["results"]} == {"issuance"}
    assert created(b.get("wallets"), 200)["count"] == 0
    assert [w["id"] for w in created(corp.get("wallets"), 200)["results"]] == [corporate]


# --------------------------------------------------------------------------- refusal codes


@pytest.mark.django_db
def test_insufficient_funds(bank):
    cb, a = bank["cb"], bank["a"]
    w1, w2 = funded_wallet(a, 1_000), open_wallet(a)
    for path, body in [
        ("payments", {"from_wallet": w1, "to_wallet": w2, "amount": 1_001}),
        ("holds", {"from_wallet": w1, "to_wallet": w2, "amount": 1_001, "expires_in_s": 60}),
        ("redemptions", {"wallet": w1, "amount": 1_001}),
        ("exchanges", {"wallet": w2, "amount": A_FUNDS}),  # the vault keeps A_FUNDS - 1,000
    ]:
        with unchanged():
            assert_problem(a.post(path, body), 409, "insufficient-funds")
    hold(a, w1, w2, 600)  # held money is not available
    with unchanged():
        assert_problem(
            a.post("payments", {"from_wallet": w1, "to_wallet": w2, "amount": 401}), 409, "insufficient-funds"
        )
    with unchanged():
        before = chain_supply()
        assert_problem(cb.post("withdrawals", {"operator": "bank-a", "amount": A_FUNDS}), 409, "insufficient-funds")
        assert chain_supply() == before
    assert Tier1Op.objects.filter(kind="withdraw").count() == 0


@pytest.mark.django_db
def test_caps(bank):
    a = bank["a"]
    small = funded_wallet(a, 1_900_000, tier=3)  # balance cap 2,000,000; single 500,000; daily 500,000
    big = funded_wallet(a, 3_000_000, tier=2)
    with unchanged():
        assert_problem(a.post("exchanges", {"wallet": small, "amount": 100_001}), 409, "over-balance-cap")
    with unchanged():
        assert_problem(
            a.post("payments", {"from_wallet": big, "to_wallet": small, "amount": 100_001}), 409, "over-balance-cap"
        )
    with unchanged():
        body = {"from_wallet": big, "to_wallet": small, "amount": 100_001, "expires_in_s": 60}
        assert_problem(a.post("holds", body), 409, "over-balance-cap")
    with unchanged():
        assert_problem(
            a.post("payments", {"from_wallet": small, "to_wallet": big, "amount": 500_001}), 409, "over-single-cap"
        )
    pay(a, small, big, 300_000)
    h = hold(a, small, big, 150_000)["id"]
    with unchanged():  # 300,000 paid + 150,000 held today: 50,001 more is over the daily 500,000
        assert_problem(
            a.post("payments", {"from_wallet": small, "to_wallet": big, "amount": 50_001}), 409, "over-daily-cap"
        )
    created(a.post(f"holds/{h}/void"), 200)
    with unchanged():  # a voided hold does not give its amount back to the day
        assert_problem(
            a.post("payments", {"from_wallet": small, "to_wallet": big, "amount": 50_001}), 409, "over-daily-cap"
        )
    pay(a, small, big, 50_000)  # exactly the daily cap
    # The balance cap counts held money too (available + held).
    other = funded_wallet(a, 1_900_000, tier=3)
    hold(a, other, big, 100_000)  # available 1,800,000, held 100,000
    with unchanged():
        assert_problem(
            a.post("payments", {"from_wallet": big, "to_wallet": other, "amount": 100_001}), 409, "over-balance-cap"
        )
    pay(a, big, other, 100_000)
    ledger_ok()


@pytest.mark.django_db
def test_frozen_closed_and_not_empty_wallets(bank):
    a = bank["a"]
    w1, w2, w3 = funded_wallet(a, 10_000), funded_wallet(a, 10_000), open_wallet(a)
    assert created(a.patch(f"wallets/{w2}", {"status": "frozen"}), 200)["status"] == "frozen"
    for path, body in [
        ("payments", {"from_wallet": w2, "to_wallet": w1, "amount": 1}),
        ("payments", {"from_wallet": w1, "to_wallet": w2, "amount": 1}),
        ("holds", {"from_wallet": w2, "to_wallet": w1, "amount": 1, "expires_in_s": 60}),
        ("exchanges", {"wallet": w2, "amount": 1}),
        ("redemptions", {"wallet": w2, "amount": 1}),
        ("payments/batch", {"payments": [{"from_wallet": w2, "to_wallet": w1, "amount": 1}], "linked": True}),
    ]:
        with unchanged():
            resp = a.post(path, body)
            if path == "payments/batch":
                assert assert_problem(resp, 409, "linked-batch-failed")["results"][0]["code"] == "wallet-frozen"
            else:
                assert_problem(resp, 409, "wallet-frozen")

    with unchanged():
        assert_problem(a.patch(f"wallets/{w1}", {"status": "closed"}), 409, "wallet-not-empty")
    h = hold(a, w1, w3, 10_000)["id"]  # nothing available, everything held: still not empty
    with unchanged():
        assert_problem(a.patch(f"wallets/{w1}", {"status": "closed"}), 409, "wallet-not-empty")
    created(a.post(f"holds/{h}/void"), 200)
    created(a.post("redemptions", {"wallet": w1, "amount": 10_000}))
    assert created(a.patch(f"wallets/{w1}", {"status": "closed"}), 200)["status"] == "closed"
    for path, body in [
        ("payments", {"from_wallet": w3, "to_wallet": w1, "amount": 1}),
        ("exchanges", {"wallet": w1, "amount": 1}),
    ]:
        with unchanged():
            assert_problem(a.post(path, body), 409, "wallet-closed")
    for change in ({"status": "active"}, {"status": "frozen"}, {"tier": 3}):
        with unchanged():
            assert_problem(a.patch(f"wallets/{w1}", change), 409, "wallet-closed")
    created(a.patch(f"wallets/{w2}", {"status": "active"}), 200)
    pay(a, w2, w3, 1)  # thawed


@pytest.mark.django_db
def test_same_wallet_and_idempotency_key_problems(bank):
    a = bank["a"]
    w1, w2 = funded_wallet(a, 1_000), open_wallet(a)
    body = {"from_wallet": w1, "to_wallet": w2, "amount": 1}
    with unchanged():
        assert_problem(a.post("payments", {**body, "to_wallet": w1}), 400, "same-wallet")
    with unchanged():
        assert_problem(a.post("holds", {**body, "to_wallet": w1, "expires_in_s": 60}), 400, "same-wallet")
    h = hold(a, w1, w2, 10)["id"]
    for method, path, payload in [
        ("post", "payments", body),
        ("post", "payments/batch", {"payments": [body]}),
        ("post", "holds", {**body, "expires_in_s": 60}),
        ("post", f"holds/{h}/capture", {}),
        ("post", f"holds/{h}/void", {}),
        ("post", "exchanges", {"wallet": w2, "amount": 1}),
        ("post", "redemptions", {"wallet": w1, "amount": 1}),
        ("post", "wallets", {"holder_name": "x", "tier": 2, "kind": "personal"}),
        ("patch", f"wallets/{w2}", {"tier": 3}),
    ]:
        call = getattr(a, method)
        keys_before = IdempotencyRecord.objects.count()
        with unchanged():
            assert_problem(call(path, payload, key=None), 400, "idempotency-key-required")
            for bad in ("", "k" * 256, "tab\there", "new\nline", "bell\x07"):
                assert_problem(call(path, payload, key=bad), 400, "idempotency-key-invalid")
        assert IdempotencyRecord.objects.count() == keys_before, path
    assert created(a.post("payments", body, key="k" * 255))["amount"] == 1  # 255 is allowed

    first = a.post("payments", body, key="reuse")
    assert first.status_code == 201
    with unchanged():
        assert_problem(a.post("payments", {**body, "amount": 2}, key="reuse"), 422, "idempotency-key-reused")
        assert_problem(a.post("payments", {**body, "memo": "x"}, key="reuse"), 422, "idempotency-key-reused")
        assert_problem(a.post("redemptions", {"wallet": w1, "amount": 1}, key="reuse"), 422, "idempotency-key-reused")
    assert a.post("payments", body, key="reuse").content == first.content


@pytest.mark.django_db
def test_hold_resolved_and_expired(bank):
    a = bank["a"]
    w1, w2 = funded_wallet(a, 100_000), open_wallet(a)
    captured, voided, lapsed = (hold(a, w1, w2, 10_000)["id"] for _ in range(3))
    created(a.post(f"holds/{captured}/capture", {"amount": 4_000}), 200)
    created(a.post(f"holds/{voided}/void"), 200)
    for h in (captured, voided):
        for action, body in (("capture", {}), ("void", None)):
            with unchanged():
                assert_problem(a.post(f"holds/{h}/{action}", body), 409, "hold-resolved")
    expire(lapsed)
    for action, body in (("capture", {"amount": 1}), ("void", None)):
        with unchanged():
            assert_problem(a.post(f"holds/{lapsed}/{action}", body), 409, "hold-expired")
    assert amounts(a, w1) == (100_000 - 4_000, 100_000 - 4_000 - 10_000, 10_000)
    assert holds_expire() == 1
    assert created(a.get(f"holds/{lapsed}"), 200)["status"] == "expired"
    assert amounts(a, w1) == (96_000, 96_000, 0)
    # Swept or not, an expired hold answers hold-expired (the answer never depends on the sweep's timing).
    for action, body in (("capture", {}), ("void", None)):
        with unchanged():
            problem = assert_problem(a.post(f"holds/{lapsed}/{action}", body), 409, "hold-expired")
            assert "expired" in problem["detail"]
    assert holds_expire() == 0
    ledger_ok()


@pytest.mark.django_db
def test_linked_batch_failed_changes_nothing(bank):
    a, b = bank["a"], bank["b"]
    w1, w2, w3 = funded_wallet(a, 10_000), open_wallet(a), open_wallet(a)
    wb = open_wallet(b)
    payments = [
        {"from_wallet": w1, "to_wallet": w2, "amount": 6_000},
        {"from_wallet": w1, "to_wallet": wb, "amount": 1_000, "memo": "interbank"},
        {"from_wallet": w1, "to_wallet": w3, "amount": 6_000},  # only 3,000 left by now
        {"from_wallet": w2, "to_wallet": w3, "amount": 1},
    ]
    with unchanged():
        body = assert_problem(
            a.post("payments/batch", {"payments": payments, "linked": True}), 409, "linked-batch-failed"
        )
    assert (body["applied"], body["linked"], body["count"], body["succeeded"]) == (False, True, 4, 0)
    assert [(r["index"], r["status"], r["code"]) for r in body["results"]] == [
        (0, 424, "linked-batch-failed"),
        (1, 424, "linked-batch-failed"),
        (2, 409, "insufficient-funds"),
        (3, 424, "linked-batch-failed"),
    ]
    assert all("transfer" not in r for r in body["results"])
    assert Transfer.objects.filter(obligation__gt=0).count() == 0  # no obligation left behind either

    # "linked" is a JSON boolean: "yes", 1 or "false" are not read as one (an unlinked batch by mistake)
    for wrong in ("yes", 1, "false", None):
        with unchanged():
            problem = assert_problem(a.post("payments/batch", {"payments": payments, "linked": wrong}), 400)
        assert "linked" in problem["errors"], problem


@pytest.mark.django_db
def test_not_settled_and_not_anchored(bank):
    a, b = bank["a"], bank["b"]
    w1, w2, wb = funded_wallet(a, 10_000), open_wallet(a), open_wallet(b)
    own = pay(a, w1, w2, 1)["id"]
    interbank = pay(a, w1, wb, 2)["id"]
    assert_problem(a.get(f"transfers/{own}/proof"), 409, "not-settled")
    assert_problem(a.get(f"transfers/{interbank}/proof"), 409, "not-settled")
    batch, _ = settlement_start()
    _claim(batch.pk)  # claimed, not yet on chain
    assert_problem(a.get(f"transfers/{interbank}/proof"), 409, "not-anchored")
    assert_problem(b.get(f"transfers/{interbank}/proof"), 409, "not-anchored")
    assert settlement_run(batch.pk).status == "anchored"
    for client in (a, b):
        proof = created(client.get(f"transfers/{interbank}/proof"), 200)
        assert json.loads(proof["leaf"])["id"] == interbank and proof["settlement"] == str(batch.pk)
    assert_problem(a.get(f"transfers/{own}/proof"), 409, "not-settled")  # same-bank payments never are


# --------------------------------------------------------------------------- hostile input


BAD_AMOUNTS = [1.0, 100.5, "100", "1e3", True, False, -1, 0, 2**63, 10**40, None, [], {}, [1], float("nan")]


def _amount_routes(w1: str, w2: str, h: str) -> list[tuple[str, str, dict]]:
    """(who, path, body with amount=?) for every route that takes an amount."""
    payment = {"from_wallet": w1, "to_wallet": w2}
    return [
        ("a", "payments", payment),
        ("a", "holds", {**payment, "expires_in_s": 60}),
        ("a", "exchanges", {"wallet": w2}),
        ("a", "redemptions", {"wallet": w1}),
        ("a", f"holds/{h}/capture", {}),
        ("cb", "issuances", {"operator": "bank-a"}),
        ("cb", "withdrawals", {"operator": "bank-a"}),
    ]


@pytest.mark.django_db
def test_amounts_are_positive_integers_of_fen(bank):
    a = bank["a"]
    w1, w2 = funded_wallet(a, 10_000), open_wallet(a)
    h = hold(a, w1, w2, 100)["id"]
    supply = chain_supply()
    for who, path, body in _amount_routes(w1, w2, h):
        for amount in BAD_AMOUNTS:
            raw = json.dumps({**body, "amount": amount}).replace("NaN", "1e999")  # NaN is no JSON: an overflow
            with unchanged():
                resp = bank[who].api.post(
                    f"/api/v1/dcep/{path}", raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex
                )
                problem = assert_problem(resp, 400)
                assert problem["code"] == "invalid" and "amount" in problem["errors"], (path, amount, problem)
    for amount in BAD_AMOUNTS[:-1]:
        batch = {
            "payments": [
                {"from_wallet": w1, "to_wallet": w2, "amount": 1},
                {"from_wallet": w1, "to_wallet": w2, "amount": amount},
            ]
        }
        with unchanged():
            problem = assert_problem(a.post("payments/batch", batch), 400, "invalid")
            assert list(problem["errors"]["payments"]) == ["1"] and "amount" in problem["errors"]["payments"]["1"]
    assert chain_supply() == supply


@pytest.mark.django_db
def test_the_largest_amount_is_refused_by_the_rules_not_by_an_overflow(bank):
    cb, a = bank["cb"], bank["a"]
    w1, w2 = funded_wallet(a, 10_000), open_wallet(a, tier=1)
    largest = 2**63 - 1
    for path, body, code in [
        ("payments", {"from_wallet": w1, "to_wallet": w2, "amount": largest}, "over-single-cap"),
        ("exchanges", {"wallet": w2, "amount": largest}, "insufficient-funds"),
        ("redemptions", {"wallet": w1, "amount": largest}, "insufficient-funds"),
    ]:
        with unchanged():
            assert_problem(a.post(path, body), 409, code)
    supply, before = chain_supply(), money_state()
    # bank-a already holds some: the chain's total would pass the maximum. The operation is
    # kept (refused, with the chain's reason); no money moved on either tier.
    problem = assert_problem(cb.post("issuances", {"operator": "bank-a", "amount": largest}), 409, "tier1-refused")
    assert "maximum" in problem["detail"] and chain_supply() == supply
    after = money_state()
    assert {k: v for k, v in after.items() if k != "tier1"} == {k: v for k, v in before.items() if k != "tier1"}
    assert Tier1Op.objects.get(amount=largest).status == "refused"


@pytest.mark.django_db
def test_unknown_fields_and_wrong_shapes_are_400(bank):
    a = bank["a"]
    w1, w2 = funded_wallet(a, 10_000), open_wallet(a)
    h = hold(a, w1, w2, 100)["id"]
    payment = {"from_wallet": w1, "to_wallet": w2, "amount": 1}
    cases = [
        ("payments", {**payment, "fee": 0}),
        ("payments", {**payment, "from_operator": "bank-b"}),
        ("payments/batch", {"payments": [payment], "atomic": True}),
        ("payments/batch", {"payments": [{**payment, "currency": "USD"}]}),
        ("payments/batch", {"payments": [payment, "not a payment"]}),
        ("payments/batch", {"payments": []}),
        ("payments/batch", {"payments": {"0": payment}}),
        ("holds", {**payment, "expires_in_s": 60, "auto_capture": True}),
        ("holds", {**payment, "expires_in_s": 0}),
        ("holds", {**payment, "expires_in_s": 10**9}),
        ("holds", {**payment, "expires_in_s": 1.5}),
        (f"holds/{h}/capture", {"amount": 1, "to_wallet": w1}),
        ("exchanges", {"wallet": w2, "amount": 1, "operator": "bank-b"}),
        ("wallets", {"holder_name": "x", "tier": 2, "kind": "personal", "balance": 10**9}),
        ("wallets", {"holder_name": "x", "tier": 5, "kind": "personal"}),
        ("wallets", {"holder_name": "x", "tier": 2, "kind": "offshore"}),
        ("wallets", {"holder_name": "x", "tier": 2, "kind": "personal", "holder_tenant": "acme-corp"}),
        ("wallets", {"holder_name": "x", "tier": 2, "kind": "corporate", "holder_tenant": "no-such-tenant"}),
        ("payments", {**payment, "memo": "m" * 141}),
        ("payments", [payment]),
        ("payments", "payment"),
    ]
    for path, body in cases:
        with unchanged():
            assert_problem(a.post(path, body), 400, "invalid")
    for change in ({"status": "frozen", "owner": "me"}, {}, {"status": "deleted"}, {"balance": 0}):
        with unchanged():
            assert_problem(a.patch(f"wallets/{w1}", change), 400, "invalid")


@pytest.mark.django_db
def test_bodies_too_deep_or_too_big_are_clean_4xx(bank):
    a = bank["a"]
    w1, w2 = funded_wallet(a, 10_000), open_wallet(a)

    def post_raw(path: str, raw: str):
        return a.api.post(
            f"/api/v1/dcep/{path}", raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex
        )

    item = {"from_wallet": w1, "to_wallet": w2, "amount": 1}
    with unchanged():
        assert_problem(post_raw("payments", "[" * 100_000 + "]" * 100_000), 400)
        deep = '{"from_wallet": "' + w1 + '", "memo": ' + "[" * 64 + "]" * 64 + "}"  # 65 levels: over the limit
        assert "nested deeper than 64" in assert_problem(post_raw("payments", deep), 400, "parse-error")["detail"]
        assert_problem(post_raw("payments/batch", '{"payments": [' + deep + "]}"), 400, "parse-error")
        assert_problem(post_raw("payments/batch", '{"payments": ' + "[" * 50_000 + "]" * 50_000 + "}"), 400)
        assert_problem(post_raw("payments", json.dumps({**item, "memo": "x" * 9_000_000})), 413)
        many = json.dumps({"payments": [{**item, "memo": "x" * 140}] * 50_000})  # ~10 MB, over the 8 MiB limit
        assert_problem(post_raw("payments/batch", many), 413)
        over = json.dumps({"payments": [item] * 8_191})  # under the size limit, over the count
        problem = assert_problem(post_raw("payments/batch", over), 400, "invalid")
        assert "8190" in json.dumps(problem["errors"])
        assert_problem(post_raw("payments", "{not json"), 400, "parse-error")
        assert_problem(post_raw("payments", '{"from_wallet": "' + w1 + '", "amount": NaN}'), 400, "parse-error")
    assert Transfer.objects.filter(kind="payment").count() == 0
    # A full batch with the longest non-ASCII memos (~5 MB) is under the limit: accepted.
    full = json.dumps({"payments": [{**item, "memo": "元" * 140}] * 8_190})
    assert len(full.encode()) > 2_621_440
    assert post_raw("payments/batch", full).status_code == 201


@pytest.mark.django_db
def test_wallet_numbers_are_checked(bank):
    a = bank["a"]
    w1 = funded_wallet(a, 10_000)
    typo = w1[:-1] + str((int(w1[-1]) + 1) % 10)  # one digit off: the check digit no longer fits
    swapped = w1[:5] + w1[6] + w1[5] + w1[7:] if w1[5] != w1[6] else typo
    nowhere = new_wallet_number()
    for path in (typo, swapped, nowhere, w1[:15], w1 + "0", "abcd" * 4, "0" * 16, "-1"):
        assert_problem(a.get(f"wallets/{path}"), 404, "not-found")
        with unchanged():
            assert_problem(a.patch(f"wallets/{path}", {"status": "frozen"}), 404, "not-found")
    for bad in (typo, w1[:15], w1 + "0", "abcd" * 4, 8123456789012345, None):
        for body in (
            {"from_wallet": bad, "to_wallet": w1, "amount": 1},
            {"from_wallet": w1, "to_wallet": bad, "amount": 1},
        ):
            with unchanged():
                problem = assert_problem(a.post("payments", body), 400, "invalid")
                assert set(problem["errors"]) <= {"from_wallet", "to_wallet"}
        with unchanged():
            assert_problem(a.post("exchanges", {"wallet": bad, "amount": 1}), 400, "invalid")
    with unchanged():  # a valid number that does not exist is a 404, named
        assert (
            nowhere
            in assert_problem(a.post("payments", {"from_wallet": w1, "to_wallet": nowhere, "amount": 1}), 404)["detail"]
        )


# --------------------------------------------------------------------------- holds


@pytest.mark.django_db
def test_hold_place_capture_part_void_and_expire(bank):
    a, b = bank["a"], bank["b"]
    payer, payee, wb = funded_wallet(a, 100_000), open_wallet(a), open_wallet(b)
    placed = hold(a, payer, payee, 30_000)
    assert (placed["status"], placed["amount"], placed["captured"], placed["from_wallet"]) == (
        "pending",
        30_000,
        0,
        payer,
    )
    assert amounts(a, payer) == (100_000, 70_000, 30_000)
    assert amounts(a, payee) == (0, 0, 0)

    done = created(a.post(f"holds/{placed['id']}/capture", {"amount": 12_000}), 200)
    assert (done["status"], done["captured"]) == ("captured", 12_000) and done["resolved_at"]
    assert amounts(a, payer) == (88_000, 88_000, 0)
    assert amounts(a, payee) == (12_000, 12_000, 0)

    whole = hold(a, payer, payee, 8_000)["id"]
    assert created(a.post(f"holds/{whole}/capture"), 200)["captured"] == 8_000
    voided = hold(a, payer, payee, 5_000)["id"]
    with unchanged():
        assert_problem(a.post(f"holds/{voided}/capture", {"amount": 5_001}), 400, "invalid")
    assert created(a.post(f"holds/{voided}/void"), 200)["status"] == "voided"
    assert amounts(a, payer) == (80_000, 80_000, 0)

    lapsed = hold(a, payer, wb, 20_000, expires_in_s=1)["id"]
    assert amounts(a, payer) == (80_000, 60_000, 20_000)
    expire(lapsed)
    assert holds_expire() == 1
    assert amounts(a, payer) == (80_000, 80_000, 0)
    assert amounts(b, wb) == (0, 0, 0)
    kinds = [
        t["kind"] for t in created(a.get("transfers", {"wallet": payer, "ordering": "created_at"}), 200)["results"]
    ]
    assert kinds == ["exchange", "hold", "capture", "hold", "capture", "hold", "release", "hold", "release"]
    statuses = {h["id"]: h["status"] for h in created(a.get("holds"), 200)["results"]}
    assert sorted(statuses.values()) == ["captured", "captured", "expired", "voided"]
    assert created(a.get("holds", {"status": "expired"}), 200)["count"] == 1

    interbank = hold(a, payer, wb, 10_000)["id"]  # captured across banks: an obligation
    created(a.post(f"holds/{interbank}/capture", {"amount": 7_000}), 200)
    assert amounts(b, wb) == (7_000, 7_000, 0)
    capture = Transfer.objects.get(kind="capture", obligation__gt=0)
    assert capture.obligation == 7_000
    # bank-b sees the capture into its wallet, but not which wallet of bank-a's it came from.
    seen = created(b.get(f"transfers/{capture.pk}"), 200)
    assert (seen["from_wallet"], seen["to_wallet"]) == (None, wb)
    assert created(b.get("transfers", {"wallet": payer}), 200)["count"] == 0
    assert str(capture.pk) in [t["id"] for t in created(a.get("transfers", {"wallet": payer}), 200)["results"]]
    assert [h["id"] for h in created(b.get("holds"), 200)["results"]] == []  # holds are the payer's side
    assert_problem(b.get(f"holds/{interbank}"), 404, "not-found")
    ledger_ok()


# --------------------------------------------------------------------------- corporate wallets


@pytest.mark.django_db
def test_enterprise_pays_and_holds_from_its_corporate_wallet(bank, enterprise):
    a, b, corp, stranger = bank["a"], bank["b"], bank["corp"], bank["stranger"]
    corporate = funded_wallet(a, 1_000_000, kind="corporate", holder_tenant=enterprise.slug, name="Acme treasury")
    personal, wb = funded_wallet(a, 10_000), open_wallet(b)
    assert created(corp.get(f"wallets/{corporate}"), 200)["holder_tenant"] == enterprise.slug
    assert_problem(corp.get(f"wallets/{personal}"), 404, "not-found")

    paid = pay(corp, corporate, wb, 100_000, memo="invoice 7")
    assert (paid["from_wallet"], paid["to_wallet"], paid["to_operator"]) == (corporate, wb, "bank-b")
    h = hold(corp, corporate, personal, 50_000)["id"]
    assert created(corp.post(f"holds/{h}/capture", {"amount": 20_000}), 200)["captured"] == 20_000
    v = hold(corp, corporate, personal, 1_000)["id"]
    created(corp.post(f"holds/{v}/void"), 200)
    batch = created(
        corp.post("payments/batch", {"payments": [{"from_wallet": corporate, "to_wallet": wb, "amount": 1}]})
    )
    assert batch["succeeded"] == 1
    assert amounts(corp, corporate) == (1_000_000 - 100_000 - 20_000 - 1,) * 2 + (0,)

    own = {t["id"]: t["kind"] for t in created(corp.get("transfers", {"page_size": 50}), 200)["results"]}
    # Every movement of its money, the capture of its hold included.
    assert sorted(own.values()) == sorted(["exchange", "payment", "hold", "capture", "hold", "release", "payment"])
    assert all(
        corporate in (t["from_wallet"], t["to_wallet"]) or t["hold"]
        for t in created(corp.get("transfers", {"page_size": 50}), 200)["results"]
    )
    assert len(created(corp.get("holds"), 200)["results"]) == 2
    assert created(stranger.get("wallets"), 200)["count"] == 0
    assert created(stranger.get("transfers"), 200)["count"] == 0
    assert_problem(stranger.get(f"holds/{h}"), 404, "not-found")
    with unchanged():
        assert_problem(stranger.post(f"holds/{v}/void"), 404, "not-found")
    ledger_ok()


# --------------------------------------------------------------------------- transfer list


@pytest.mark.django_db
def test_transfer_list_filters_and_scope(bank, enterprise):
    a, b, corp = bank["a"], bank["b"], bank["corp"]
    w1, w2, wb = funded_wallet(a, 100_000), open_wallet(a), open_wallet(b)
    first = pay(a, w1, w2, 1, memo="before")
    middle = timezone.now()
    second = pay(a, w1, wb, 2, memo="after")
    third = pay(a, w2, w1, 1, memo="after")

    def ids(client, **params):
        return [t["id"] for t in created(client.get("transfers", params), 200)["results"]]

    assert ids(a, wallet=w2) == [third["id"], first["id"]]  # newest first
    assert ids(a, wallet=wb) == [second["id"]]
    assert ids(a, kind="payment") == [third["id"], second["id"], first["id"]]
    assert ids(a, kind="exchange", wallet=w1) and ids(a, kind="issuance")
    assert ids(a, since=middle.isoformat(), kind="payment") == [third["id"], second["id"]]
    assert ids(a, until=middle.isoformat(), kind="payment") == [first["id"]]
    assert ids(a, since=middle.isoformat(), until=middle.isoformat()) == []
    assert ids(a, wallet=new_wallet_number()) == []
    # bank-b sees the payment into its wallet (and its payer's number), nothing else of bank-a's
    assert ids(b, kind="payment") == [second["id"]]
    assert ids(b, wallet=w1) == [second["id"]]
    assert ids(b, wallet=w2) == []
    assert_problem(b.get(f"transfers/{first['id']}"), 404, "not-found")
    assert created(b.get(f"transfers/{second['id']}"), 200)["from_wallet"] == w1
    assert ids(corp) == [] and ids(corp, wallet=w1) == []
    for bad in ({"kind": "bribe"}, {"since": "yesterday"}, {"until": "2026-13-45"}):
        assert_problem(a.get("transfers", bad), 400, "invalid")
    assert_problem(a.get("transfers/not-a-uuid"), 404, "not-found")


# --------------------------------------------------------------------------- batches


@pytest.mark.django_db
def test_unlinked_batch_applies_each_payment_on_its_own_in_order(bank):
    a, b = bank["a"], bank["b"]
    w1, w2, wb = funded_wallet(a, 10_000), open_wallet(a), open_wallet(b)
    frozen = funded_wallet(a, 10)
    created(a.patch(f"wallets/{frozen}", {"status": "frozen"}), 200)
    payments = [
        {"from_wallet": w1, "to_wallet": w2, "amount": 4_000, "memo": "one"},
        {"from_wallet": w1, "to_wallet": w1, "amount": 1},
        {"from_wallet": w1, "to_wallet": wb, "amount": 5_000, "memo": "interbank"},
        {"from_wallet": w1, "to_wallet": w2, "amount": 1_001},  # 1,000 left by now
        {"from_wallet": w2, "to_wallet": w1, "amount": 4_000},  # spends what payment 0 brought
        {"from_wallet": new_wallet_number(), "to_wallet": w1, "amount": 1},
        {"from_wallet": w1, "to_wallet": frozen, "amount": 1},
        {"from_wallet": wb, "to_wallet": w1, "amount": 1},  # bank-b's wallet: not ours to spend
    ]
    body = created(a.post("payments/batch", {"payments": payments}))
    assert (body["applied"], body["linked"], body["count"], body["succeeded"]) == (True, False, 8, 3)
    assert [(r["index"], r["status"], r.get("code")) for r in body["results"]] == [
        (0, 201, None),
        (1, 400, "same-wallet"),
        (2, 201, None),
        (3, 409, "insufficient-funds"),
        (4, 201, None),
        (5, 404, "not-found"),
        (6, 409, "wallet-frozen"),
        (7, 404, "not-found"),
    ]
    transfers = [r["transfer"] for r in body["results"] if r["status"] == 201]
    assert [t["memo"] for t in transfers] == ["one", "interbank", ""]
    assert amounts(a, w1) == (10_000 - 4_000 - 5_000 + 4_000,) * 2 + (0,)
    assert amounts(a, w2) == (0, 0, 0) and amounts(b, wb) == (5_000, 5_000, 0)
    listed = {t["id"] for t in created(a.get("transfers", {"kind": "payment"}), 200)["results"]}
    assert listed == {t["id"] for t in transfers}

    linked = created(a.post("payments/batch", {"payments": payments[:1] + payments[4:5], "linked": True}))
    assert (linked["applied"], linked["succeeded"]) == (True, 2)
    ledger_ok()


@pytest.mark.django_db
def test_full_size_batch(bank):
    a = bank["a"]
    w1, w2 = funded_wallet(a, 1_000_000), open_wallet(a)
    batch = {"payments": [{"from_wallet": w1, "to_wallet": w2, "amount": 1}] * 8_190, "linked": True}
    body = created(a.post("payments/batch", batch))
    assert (body["count"], body["succeeded"]) == (8_190, 8_190)
    assert amounts(a, w2) == (8_190, 8_190, 0)
    ledger_ok()


# --------------------------------------------------------------------------- tier 1


@pytest.mark.django_db
def test_withdrawals(bank):
    cb, a, b = bank["cb"], bank["a"], bank["b"]
    w1 = funded_wallet(a, 1_000_000)
    with unchanged():
        assert_problem(
            cb.post("withdrawals", {"operator": "bank-a", "amount": A_FUNDS - 1_000_000 + 1}), 409, "insufficient-funds"
        )
    with unchanged():
        assert_problem(cb.post("withdrawals", {"operator": "no-such-bank", "amount": 1}), 404, "not-found")
    done = created(cb.post("withdrawals", {"operator": "bank-a", "amount": 2_000_000}))
    assert done["transfer"]["kind"] == "withdrawal" and len(done["receipt"]["tx_id"]) == 64
    assert chain_supply()["allocations"]["bank-a"] == A_FUNDS - 2_000_000

    # Money paid to bank-b and redeemed into its vault is not yet bank-b's on tier 1 (until
    # settled): withdrawing it is refused by the chain and put back with a reversal.
    wb = open_wallet(b)
    pay(a, w1, wb, 500_000)
    created(b.post("redemptions", {"wallet": wb, "amount": 500_000}))
    resp = cb.post("withdrawals", {"operator": "bank-b", "amount": B_FUNDS + 500_000})
    assert_problem(resp, 409, "insufficient-funds")
    assert Transfer.objects.filter(kind="reversal").count() == 1
    supply = created(cb.get("supply"), 200)
    assert supply["ok"], supply["checks"]
    assert supply["operators"]["bank-b"]["vault"] == B_FUNDS + 500_000
    assert supply["withdrawn"] == 2_000_000
    ledger_ok()


# --------------------------------------------------------------------------- replays


@pytest.mark.django_db
def test_replays_return_the_first_response_byte_for_byte(bank):
    cb, a, b = bank["cb"], bank["a"], bank["b"]
    w1, w2 = funded_wallet(a, 10_000), open_wallet(a)
    calls = [
        ("payments", {"from_wallet": w1, "to_wallet": w2, "amount": 100}),
        ("payments/batch", {"payments": [{"from_wallet": w1, "to_wallet": w2, "amount": 100}]}),
        ("holds", {"from_wallet": w1, "to_wallet": w2, "amount": 100, "expires_in_s": 60}),
        ("exchanges", {"wallet": w2, "amount": 100}),
        ("redemptions", {"wallet": w2, "amount": 100}),
        ("wallets", {"holder_name": "once", "tier": 2, "kind": "personal"}),
    ]
    for path, body in calls:
        key = f"once-{path}"
        first = a.post(path, body, key=key)
        assert first.status_code == 201, first.content
        with unchanged():
            again = a.post(path, body, key=key)
        assert (again.status_code, again.content) == (201, first.content)
        assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
        assert again["Content-Type"] == first["Content-Type"]
    assert Account.objects.filter(holder_name="once").count() == 1

    h = hold(a, w1, w2, 50)["id"]
    first = a.post(f"holds/{h}/capture", {"amount": 20}, key="capture-once")
    with unchanged():
        again = a.post(f"holds/{h}/capture", {"amount": 20}, key="capture-once")
    assert (again.status_code, again.content) == (200, first.content)
    first = a.patch(f"wallets/{w2}", {"tier": 3}, key="patch-once")
    with unchanged():
        assert a.patch(f"wallets/{w2}", {"tier": 3}, key="patch-once").content == first.content

    # A refusal is replayed too, even once the request would now succeed.
    poor = open_wallet(a)
    refused = a.post("payments", {"from_wallet": poor, "to_wallet": w2, "amount": 5}, key="too-early")
    assert_problem(refused, 409, "insufficient-funds")
    created(a.post("exchanges", {"wallet": poor, "amount": 5}))
    with unchanged():
        again = a.post("payments", {"from_wallet": poor, "to_wallet": w2, "amount": 5}, key="too-early")
    assert (again.status_code, again.content, again["Idempotent-Replayed"]) == (409, refused.content, "true")
    assert again["Content-Type"].startswith("application/problem+json")
    # A 400 of the input is not stored: the key stays free for the corrected request.
    assert_problem(a.post("payments", {"from_wallet": poor, "to_wallet": w2, "amount": "5"}, key="fixed"), 400)
    created(a.post("payments", {"from_wallet": poor, "to_wallet": w2, "amount": 5}, key="fixed"))

    # Keys are per tenant: bank-b's "same" key is its own request, never bank-a's response.
    wb = funded_wallet(b, 100)
    mine = a.post("payments", {"from_wallet": w1, "to_wallet": wb, "amount": 7}, key="shared")
    theirs = b.post("payments", {"from_wallet": wb, "to_wallet": w1, "amount": 7}, key="shared")
    assert mine.status_code == theirs.status_code == 201
    assert theirs.json()["from_wallet"] == wb and "Idempotent-Replayed" not in theirs
    replay = b.post("payments", {"from_wallet": w1, "to_wallet": wb, "amount": 7}, key="shared")
    assert_problem(replay, 422, "idempotency-key-reused")  # bank-b's key, another body: not bank-a's 201

    # Tier 1: a resent issuance is the first one, and the chain applied it once.
    issued = cb.post("issuances", {"operator": "bank-b", "amount": 1_000}, key="issue-once")
    supply = chain_supply()
    again = cb.post("issuances", {"operator": "bank-b", "amount": 1_000}, key="issue-once")
    assert (again.status_code, again.content) == (201, issued.content)
    assert chain_supply() == supply and supply["issued"] == A_FUNDS + B_FUNDS + 1_000
    ledger_ok()


def test_a_resend_replays_the_first_answer_whatever_the_work_would_do_now(bank, monkeypatch):
    """The key is stored after the work: a resend whose work would now be refused (or succeed)
    still gets the first answer, and nothing of the second run stays."""
    a = bank["a"]
    w1, w2 = funded_wallet(a, 100), open_wallet(a)
    first = created(a.post("payments", {"from_wallet": w1, "to_wallet": w2, "amount": 100}, key="all-of-it"))
    with unchanged():  # w1 is empty now: the work is refused, rolled back, and the 201 replayed
        again = a.post("payments", {"from_wallet": w1, "to_wallet": w2, "amount": 100}, key="all-of-it")
    assert (again.status_code, again.json(), again["Idempotent-Replayed"]) == (201, first, "true")
    assert IdempotencyRecord.objects.filter(key="all-of-it").count() == 1

    # A batch looks its key up before working: its resend never runs the payments again.
    body = {"payments": [{"from_wallet": w2, "to_wallet": w1, "amount": 1}]}
    created(a.post("payments/batch", body, key="batch-once"))
    from apps.dcep import services

    def not_again(**kwargs):
        raise AssertionError("the batch ran again")

    monkeypatch.setattr(services, "payment_batch", not_again)
    with unchanged():
        assert a.post("payments/batch", body, key="batch-once")["Idempotent-Replayed"] == "true"
    ledger_ok()


# --------------------------------------------------------------------------- concurrency (live server)


def _live(live_server, membership):
    secret = token_issue(membership=membership, name="live").secret
    session = requests.Session()
    session.headers["Authorization"] = f"Token {secret}"

    def post(path: str, body: dict, key: str):
        return session.post(
            f"{live_server.url}/api/v1/dcep/{path}", json=body, headers={"Idempotency-Key": key}, timeout=60
        )

    return post


def _together(n: int, call):
    """``call(i)`` from n threads released at once; the responses in order."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_apply_once(tier1, clients, live_server):
    cb, a = clients["cb"], clients["a"]
    issue(cb, "bank-a", 1_000_000)
    w1, w2 = funded_wallet(a, 500_000), open_wallet(a)
    post = _live(live_server, a.membership)
    body = {"from_wallet": w1, "to_wallet": w2, "amount": 1_000}
    for round_ in range(3):
        key = f"dup-{round_}"
        responses = _together(6, lambda i, key=key: post("payments", body, key))
        assert {r.status_code for r in responses} == {201}, [r.content for r in responses]
        assert len({r.content for r in responses}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") != "true" for r in responses) == 1
    assert Transfer.objects.filter(kind="payment").count() == 3
    assert amounts(a, w2) == (3_000, 3_000, 0)

    # Different keys on one wallet: exactly what the money allows, never more.
    spend = {"from_wallet": w1, "to_wallet": w2, "amount": 100_000}
    responses = _together(8, lambda i: post("payments", spend, f"spend-{i}"))
    assert sorted(r.status_code for r in responses) == [201] * 4 + [409] * 4
    assert amounts(a, w1) == (500_000 - 3_000 - 400_000, 500_000 - 3_000 - 400_000, 0)

    # Tier 1: the duplicate of an issuance never issues twice.
    cb_post = _live(live_server, cb.membership)
    responses = _together(3, lambda i: cb_post("issuances", {"operator": "bank-b", "amount": 777}, "issue-dup"))
    good = [r for r in responses if r.status_code == 201]
    assert good and all(
        r.status_code == 409 and r.json()["code"] == "idempotency-key-in-flight" for r in responses if r not in good
    )
    assert len({r.content for r in good}) == 1
    assert chain_supply()["allocations"]["bank-b"] == 777
    ledger_ok()


@pytest.mark.django_db(transaction=True)
def test_naming_another_partys_wallet_never_locks_it(tier1, clients, live_server):
    """Bank B names bank A's wallet as payer (or as the wallet to change): while bank A holds that
    wallet's row lock (a payment in progress), B's calls answer 404 at once instead of waiting."""
    cb, a, b = clients["cb"], clients["a"], clients["b"]
    issue(cb, "bank-a", 100_000)
    issue(cb, "bank-b", 100_000)
    wa, wb = funded_wallet(a, 50_000), funded_wallet(b, 50_000)
    post = _live(live_server, b.membership)
    settings_dict = connection.settings_dict
    holder = psycopg.connect(
        dbname=settings_dict["NAME"],
        user=settings_dict["USER"] or None,
        host=settings_dict["HOST"] or None,
        port=settings_dict["PORT"] or None,
        password=settings_dict["PASSWORD"] or None,
    )
    try:
        with holder.cursor() as cursor:  # bank A's payment in progress: its wallet row is locked
            cursor.execute("SELECT id FROM dcep_account WHERE number = %s FOR UPDATE", [wa])
        calls = [
            ("payments", {"from_wallet": wa, "to_wallet": wb, "amount": 1}),
            ("payments/batch", {"payments": [{"from_wallet": wa, "to_wallet": wb, "amount": 1}]}),
            ("holds", {"from_wallet": wa, "to_wallet": wb, "amount": 1, "expires_in_s": 60}),
            ("exchanges", {"wallet": wa, "amount": 1}),
            ("redemptions", {"wallet": wa, "amount": 1}),
        ]
        with ThreadPoolExecutor(len(calls)) as pool:
            futures = [pool.submit(post, path, body, f"probe-{path}") for path, body in calls]
            answers = [f.result(timeout=20) for f in futures]  # a locked row would wait until rollback
        by_path = dict(zip([path for path, _ in calls], answers, strict=True))
        for path, resp in by_path.items():
            if path == "payments/batch":
                assert resp.status_code == 201 and resp.json()["results"][0]["status"] == 404, resp.content
            else:
                assert resp.status_code == 404, (path, resp.content)
    finally:
        holder.rollback()
        holder.close()
    assert amounts(a, wa) == (50_000, 50_000, 0)


# --------------------------------------------------------------------------- query counts


@pytest.mark.django_db
def test_lists_cost_the_same_for_2_or_20_rows(bank, enterprise):
    a, b = bank["a"], bank["b"]
    wb = open_wallet(b)
    w = [funded_wallet(a, 100_000)]
    w.append(open_wallet(a, kind="corporate", holder_tenant=enterprise.slug))
    pay(a, w[0], w[1], 1)
    hold(a, w[0], w[1], 1)
    hold(a, w[0], wb, 1)
    rows = {path: created(a.get(path), 200)["count"] for path in ("wallets", "holds")}
    assert rows == {"wallets": 2, "holds": 2}
    small = {path: count_queries(a.api, f"/api/v1/dcep/{path}") for path in ("wallets", "holds", "transfers")}
    transfers_small = created(a.get("transfers"), 200)["count"]

    for i in range(18):
        w.append(open_wallet(a, tier=1 + i % 4, kind="corporate" if i % 2 else "personal",
                             holder_tenant=enterprise.slug if i % 2 else None))  # fmt: skip
    for i in range(6):
        pay(a, w[0], w[2 + i], 10)
        pay(a, w[0], wb, 10)
        h = hold(a, w[0], w[2 + i], 5)["id"]
        created(a.post(f"holds/{h}/capture", {"amount": 2}), 200)
        hold(a, w[0], wb, 3)
    created(bank["cb"].post("issuances", {"operator": "bank-a", "amount": 5}))
    assert created(a.get("wallets"), 200)["count"] == 20
    assert created(a.get("holds"), 200)["count"] >= 14
    assert created(a.get("transfers"), 200)["count"] >= transfers_small + 18
    large = {path: count_queries(a.api, f"/api/v1/dcep/{path}") for path in ("wallets", "holds", "transfers")}
    # token and membership, the page's count, the page's rows (the caller's institution was
    # read by the first request above and is remembered by the process: it never changes)
    assert small == large == {"wallets": 3, "holds": 3, "transfers": 3}

"""Programmable payments: holds bound to a chain app's events, through the API and the consumer.

The holds are placed through ``POST /api/v1/dcep/holds`` (real tier-1 node for the money's
issuance); the events are handed to ``apps.dcep.programmable.on_chain_events`` the way the
event reader does (apps/events/feed.py): in chain order, at least once. The end-to-end test
with a real trade-finance node is tests/integration/test_programmable_e2e.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.chainapps.models import ChainApp
from apps.dcep.models import Account, Hold, HoldRelease
from apps.dcep.programmable import interested_apps, on_chain_events
from apps.dcep.selectors import deep_checks
from apps.events.feed import ChainEvent
from tests.api.conftest import assert_problem, make_app
from tests.dcep.helpers import created, funded_wallet, issue, money_state, open_wallet

LC = "LC-2026-0001"


def event(app, height: int, name: str, payload, *, index=0, seq=0, contract="trade_finance", at=None, signer="bank"):
    """An event as the reader hands it over; its block made now (or ``at``, a datetime)."""
    block_time_ms = int((at or timezone.now()).timestamp() * 1000)
    return ChainEvent(
        app_id=app.pk, height=height, index=index, seq=seq, tx_id=f"{height:04d}{index:02d}".ljust(64, "0"),
        contract=contract, function=name, signer=signer, name=name, payload=payload, block_time_ms=block_time_ms,
    )  # fmt: skip


@pytest.fixture
def world(tier1, clients, enterprise):
    """The buyer (an enterprise with a corporate wallet at bank A) and its trade-finance app;
    the seller's wallet at bank B."""
    a, b, corp = clients["a"], clients["b"], clients["corp"]
    issue(clients["cb"], "bank-a", 5_000_000)
    buyer = funded_wallet(a, 1_000_000, kind="corporate", holder_tenant=enterprise.slug, name="Acme treasury")
    seller = open_wallet(b, name="Seller Ltd")
    app = make_app(corp.membership, "letters", contract_template="trade_finance")
    return {"a": a, "b": b, "corp": corp, "buyer": buyer, "seller": seller, "app": app, "clients": clients}


def bound(app, lc=LC, **extra) -> dict:
    return {
        "app": str(app.pk),
        "capture": {"event": "accepted", "match": {"lc_id": lc}},
        "void": {"event": "rejected", "match": {"lc_id": lc}},
        **extra,
    }


def place(w, amount=300_000, *, release_on=None, client=None, expires_in_s=3600) -> dict:
    body = {"from_wallet": w["buyer"], "to_wallet": w["seller"], "amount": amount, "expires_in_s": expires_in_s}
    body["release_on"] = bound(w["app"]) if release_on is None else release_on
    return created((client or w["corp"]).post("holds", body))


def wallet(client, number) -> dict:
    return created(client.get(f"wallets/{number}"), 200)


def assert_books_balance():
    checks = deep_checks()
    assert all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]


@pytest.mark.django_db
def test_accepted_captures_the_hold_once_however_often_the_event_comes(world):
    w, app = world, world["app"]
    hold = place(w)
    assert hold["release_on"] == {
        "app": str(app.pk),
        "contract": "trade_finance",  # the app's contract when none is named
        "capture": {"event": "accepted", "match": {"lc_id": LC}, "signer": None},
        "void": {"event": "rejected", "match": {"lc_id": LC}, "signer": None},
    }
    assert hold["released_by"] is None and hold["status"] == "pending"
    assert interested_apps() == [app.pk]
    assert AuditEvent.objects.filter(action="dcep.hold.bind", object_id=hold["id"]).count() == 1

    # Events of other letters of credit, other names, other contracts, a payload that is no object:
    # nothing happens and nothing is recorded.
    on_chain_events(app.pk, [
        event(app, 3, "issued", {"lc_id": LC, "issuing_bank": "bank", "beneficiary": "seller"}),
        event(app, 4, "presented", {"lc_id": LC, "documents": ["bill of lading"]}),
        event(app, 5, "accepted", {"lc_id": "LC-OTHER"}),
        event(app, 5, "accepted", {"lc_id": LC}, index=1, contract="kv"),
        event(app, 5, "accepted", "LC-2026-0001", index=2),
        event(app, 5, "accepted", {"lc": LC}, index=3),
    ])  # fmt: skip
    assert not HoldRelease.objects.exists()
    assert created(w["corp"].get(f"holds/{hold['id']}"), 200)["status"] == "pending"

    # An accepted of a block made before the hold was placed (a redelivery of old blocks) is not heard.
    on_chain_events(app.pk, [event(app, 2, "accepted", {"lc_id": LC}, at=timezone.now() - dt.timedelta(seconds=5))])
    assert not HoldRelease.objects.exists()

    accepted = event(app, 6, "accepted", {"lc_id": LC})
    on_chain_events(app.pk, [accepted])
    on_chain_events(app.pk, [accepted, accepted])  # redelivered, and twice in one batch
    rejected_later = event(app, 9, "rejected", {"lc_id": LC, "reason": "too late"})
    on_chain_events(app.pk, [accepted, rejected_later])

    got = created(w["corp"].get(f"holds/{hold['id']}"), 200)
    assert (got["status"], got["captured"]) == ("captured", 300_000)
    assert got["released_by"] == {
        "key": accepted.key, "app": str(app.pk), "name": "accepted", "tx_id": accepted.tx_id, "height": 6,
    }  # fmt: skip
    assert wallet(w["b"], w["seller"])["available"] == 300_000
    buyer = wallet(w["corp"], w["buyer"])
    assert (buyer["available"], buyer["held"]) == (700_000, 0)
    releases = list(HoldRelease.objects.values_list("event_key", "outcome", "detail"))
    assert releases == [
        (accepted.key, "captured", ""),
        (rejected_later.key, "ignored", "the hold was already captured"),
    ]
    audit = AuditEvent.objects.filter(object_id=hold["id"], action__startswith="dcep.hold.event_")
    assert list(audit.order_by("sequence").values_list("action", "actor_label")) == [
        ("dcep.hold.event_captured", "chain-event"),
        ("dcep.hold.event_ignored", "chain-event"),
    ]
    assert audit.first().tenant == w["corp"].tenant
    assert interested_apps() == []
    assert_books_balance()
    # The invariant can fail: a hold claiming another event than its record is caught.
    Hold.objects.filter(pk=hold["id"]).update(released_by={**got["released_by"], "key": "forged"})
    (check,) = [c for c in deep_checks() if c["name"] == "every hold resolved exactly once"]
    assert (check["ok"], check["detail"]) == (False, "1 holds")


@pytest.mark.django_db
def test_rejected_voids_the_hold_back_to_the_payer(world):
    w, app = world, world["app"]
    hold = place(w, 120_000)
    other = place(w, 50_000, release_on=bound(app, lc="LC-2"))
    on_chain_events(app.pk, [event(app, 7, "rejected", {"lc_id": LC, "reason": "documents late"})])
    assert created(w["corp"].get(f"holds/{hold['id']}"), 200)["status"] == "voided"
    assert created(w["corp"].get(f"holds/{other['id']}"), 200)["status"] == "pending"
    buyer = wallet(w["corp"], w["buyer"])
    assert (buyer["available"], buyer["held"]) == (950_000, 50_000)
    assert wallet(w["b"], w["seller"])["available"] == 0
    assert_books_balance()


@pytest.mark.django_db
def test_a_rule_with_a_signer_hears_only_that_app_user(world):
    w, app = world, world["app"]
    release_on = {
        "app": str(app.pk),
        "capture": {"event": "accepted", "match": {"lc_id": LC}, "signer": "bank"},
        "void": {"event": "rejected", "match": {"lc_id": LC}, "signer": "bank"},
    }
    hold = place(w, 70_000, release_on=release_on)
    assert hold["release_on"]["capture"]["signer"] == "bank"
    # Another app user of the buyer's app (say, one who issued a letter of credit with the same id first).
    on_chain_events(app.pk, [event(app, 30, "accepted", {"lc_id": LC}, signer="mallory")])
    assert not HoldRelease.objects.exists()
    on_chain_events(app.pk, [event(app, 31, "accepted", {"lc_id": LC}, signer="bank")])
    assert created(w["corp"].get(f"holds/{hold['id']}"), 200)["status"] == "captured"
    assert wallet(w["b"], w["seller"])["available"] == 70_000


@pytest.mark.django_db
def test_a_hold_resolved_by_hand_or_expired_ignores_the_event_and_says_so(world):
    w, app = world, world["app"]
    by_hand = place(w, 10_000)
    created(w["corp"].post(f"holds/{by_hand['id']}/void"), 200)
    late = place(w, 20_000, release_on=bound(app, lc="LC-late"))
    Hold.objects.filter(pk=late["id"]).update(expires_at=timezone.now() - dt.timedelta(seconds=1))  # not swept yet

    on_chain_events(
        app.pk, [event(app, 8, "accepted", {"lc_id": LC}), event(app, 8, "accepted", {"lc_id": "LC-late"}, seq=1)]
    )
    on_chain_events(app.pk, [event(app, 8, "accepted", {"lc_id": "LC-late"}, seq=1)])

    assert dict(HoldRelease.objects.values_list("hold_id", "detail")) == {
        uuid.UUID(by_hand["id"]): "the hold was already voided",
        uuid.UUID(late["id"]): "the hold had expired; released to the payer",
    }
    assert set(HoldRelease.objects.values_list("outcome", flat=True)) == {"ignored"}
    assert created(w["corp"].get(f"holds/{late['id']}"), 200)["status"] == "expired"
    assert wallet(w["b"], w["seller"])["available"] == 0
    assert wallet(w["corp"], w["buyer"])["available"] == 1_000_000
    assert_books_balance()


@pytest.mark.django_db
def test_a_payee_that_refuses_the_money_leaves_the_hold_pending(world):
    w, app = world, world["app"]
    hold = place(w, 40_000)
    created(w["b"].patch(f"wallets/{w['seller']}", {"status": "frozen"}), 200)
    accepted = event(app, 10, "accepted", {"lc_id": LC})
    on_chain_events(app.pk, [accepted])
    on_chain_events(app.pk, [accepted])  # the same event again: still one record, still pending
    (release,) = HoldRelease.objects.all()
    assert (release.outcome, release.detail.split(":")[0]) == ("refused", "wallet-frozen")
    assert created(w["corp"].get(f"holds/{hold['id']}"), 200)["status"] == "pending"
    # The void rule still works (and so would a capture or void by hand).
    on_chain_events(app.pk, [event(app, 11, "rejected", {"lc_id": LC, "reason": "x"})])
    got = created(w["corp"].get(f"holds/{hold['id']}"), 200)
    assert (got["status"], got["released_by"]["height"]) == ("voided", 11)
    assert_books_balance()


@pytest.mark.django_db
def test_release_on_is_refused_when_wrong_and_nothing_changes(world, clients):
    w, app = world, world["app"]
    stranger_app = make_app(clients["stranger"].membership, "theirs", contract_template="trade_finance")
    gone = make_app(w["corp"].membership, "gone", contract_template="trade_finance")
    ChainApp.objects.filter(pk=gone.pk).update(deleted_at=timezone.now())
    before = money_state()
    rule = {"event": "accepted", "match": {"lc_id": LC}}
    bad = [
        ({"app": str(app.pk)}, 400),  # no rule
        ({"app": str(app.pk), "capture": {"event": "", "match": {"lc_id": LC}}}, 400),
        ({"app": str(app.pk), "capture": {"event": "   ", "match": {"lc_id": LC}}}, 400),
        ({"app": str(app.pk), "capture": {"event": "accepted", "match": {}}}, 400),
        ({"app": str(app.pk), "capture": {"event": "accepted", "match": {"lc": {"id": LC}}}}, 400),
        ({"app": str(app.pk), "capture": {"event": "accepted", "match": {"lc_id": [LC]}}}, 400),
        ({"app": str(app.pk), "capture": {"event": "accepted", "match": {"amount": 1.5}}}, 400),
        ({"app": str(app.pk), "capture": {"event": "accepted", "match": "lc_id=X"}}, 400),
        ({"app": str(app.pk), "capture": {"event": "accepted"}}, 400),
        ({"app": str(app.pk), "capture": {**rule, "signer": "not a user!"}}, 400),
        ({"app": str(app.pk), "capture": {**rule, "signer": ""}}, 400),
        ({"app": str(app.pk), "capture": {**rule, "contract": "trade_finance"}}, 400),  # unknown field
        ({"app": str(app.pk), "capture": rule, "void": rule}, 400),  # the same rule twice
        ({"app": str(app.pk), "capture": rule, "contract": "kv"}, 400),  # not the app's contract
        ({"app": str(app.pk), "capture": rule, "contract": "no-such"}, 400),
        ({"app": "not-a-uuid", "capture": rule}, 400),
        ({"app": str(uuid.uuid4()), "capture": rule}, 404),
        ({"app": str(stranger_app.pk), "capture": rule}, 404),  # another tenant's app: as if absent
        ({"app": str(gone.pk), "capture": rule}, 404),
    ]
    for release_on, status in bad:
        body = {"from_wallet": w["buyer"], "to_wallet": w["seller"], "amount": 1_000, "expires_in_s": 60}
        problem = assert_problem(w["corp"].post("holds", {**body, "release_on": release_on}), status)
        assert "release_on" in problem["detail"] or "release_on" in problem.get("errors", {}), (release_on, problem)
    # The operator of the buyer's wallet may place holds from it, but not on an app its tenant cannot read.
    body = {"from_wallet": w["buyer"], "to_wallet": w["seller"], "amount": 1_000, "expires_in_s": 60}
    assert_problem(w["a"].post("holds", {**body, "release_on": bound(app)}), 404, "not-found")
    # A tenant that reads the app but does not own the wallet: the wallet is a 404.
    stranger_wallet_body = {**body, "release_on": bound(stranger_app)}
    assert_problem(clients["stranger"].post("holds", stranger_wallet_body), 404, "not-found")
    assert money_state() == before
    assert not Hold.objects.filter(release_app__isnull=False).exists()


@pytest.mark.django_db
def test_placing_a_bound_hold_replays_under_its_key(world):
    w = world
    body = {"from_wallet": w["buyer"], "to_wallet": w["seller"], "amount": 5_000, "expires_in_s": 600,
            "release_on": bound(w["app"], contract="trade_finance")}  # fmt: skip
    first = w["corp"].post("holds", body, key="bound-1")
    again = w["corp"].post("holds", body, key="bound-1")
    assert (first.status_code, again.content, again["Idempotent-Replayed"]) == (201, first.content, "true")
    assert first.json()["release_on"]["contract"] == "trade_finance"
    altered = {**body, "release_on": bound(w["app"], lc="LC-9")}
    assert_problem(w["corp"].post("holds", altered, key="bound-1"), 422, "idempotency-key-reused")
    assert Hold.objects.filter(release_app__isnull=False).count() == 1
    # A refusal for the app is kept under its key like any other refusal: the resend replays it.
    unknown = {**body, "release_on": bound(ChainApp(pk=uuid.uuid4()))}
    first = w["corp"].post("holds", unknown, key="bound-404")
    again = w["corp"].post("holds", unknown, key="bound-404")
    assert_problem(first, 404, "not-found")
    assert (again.status_code, again.content, again["Idempotent-Replayed"]) == (404, first.content, "true")


@pytest.mark.django_db(transaction=True)
def test_the_same_event_from_several_workers_at_once_captures_once(world):
    w, app = world, world["app"]
    holds = [place(w, 10_000 + i, release_on=bound(app, lc=f"LC-{i}")) for i in range(3)]
    events = [event(app, 20, "accepted", {"lc_id": f"LC-{i}"}, index=i) for i in range(3)]
    barrier, errors = threading.Barrier(4), []

    def worker():
        try:
            barrier.wait()
            on_chain_events(app.pk, events)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert HoldRelease.objects.filter(outcome="captured").count() == 3
    assert HoldRelease.objects.count() == 3
    assert wallet(w["b"], w["seller"])["available"] == sum(10_000 + i for i in range(3))
    assert set(Hold.objects.filter(pk__in=[h["id"] for h in holds]).values_list("status", flat=True)) == {"captured"}
    seller = Account.objects.get(number=w["seller"])
    assert seller.entry_count == 3
    assert_books_balance()


@pytest.mark.django_db
def test_consumer_throughput(world):
    """How fast the consumer gets through events (printed with ``-s``; docs/dcep.md quotes a run):
    no goal, but the counts prove that the redelivered ones changed nothing."""
    holds, unrelated, unmatched = 50, 5_000, 500
    w, app = world, world["app"]
    for i in range(holds):
        place(w, 1_000, release_on=bound(app, lc=f"LC-{i}"))
    now = timezone.now()

    def timed(events) -> float:
        start = time.perf_counter()
        on_chain_events(app.pk, events)
        return time.perf_counter() - start

    def block(height: int, name: str, prefix: str, count: int) -> list:
        return [
            event(app, height + i // 50, name, {"lc_id": f"{prefix}{i}"}, index=i % 50, at=now) for i in range(count)
        ]

    # Events no hold listens to (another name), accepted events of letters of credit no hold is
    # bound to, the holds' own accepted events, and those again (a redelivery).
    accepted = block(500, "accepted", "LC-", holds)
    figures = {
        "unrelated events/s": unrelated / timed(block(100, "issued", "X-", unrelated)),
        "unmatched accepted events/s": unmatched / timed(block(300, "accepted", "Y-", unmatched)),
        "captures/s": holds / timed(accepted),
        "redelivered events/s": holds / timed(accepted),
    }
    print("\nconsumer:", {k: round(v) for k, v in figures.items()})
    assert HoldRelease.objects.filter(outcome="captured").count() == holds == HoldRelease.objects.count()

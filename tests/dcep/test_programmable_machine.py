"""Event-bound holds as a state machine: placed through the API, released by chain events
that arrive once, twice, out of a redelivered window, or from several workers at once.

Hypothesis places holds bound to letters of credit (capture on ``accepted``, void on
``rejected``, some capture-only), emits events in chain order, redelivers windows of old
events, delivers the same events from three threads at once, voids by hand, moves expiries
into the past, sweeps, and freezes the payee. A model predicts every hold's status and
every (hold, event) record; after every step an invariant compares it with the database,
the wallets, the journal's deep checks (a hold resolved exactly once among them) and the
central bank's supply report.

Each example gets fresh wallets and letter-of-credit ids on the same database and chain.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import os
import threading
import uuid
from dataclasses import dataclass

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from apps.dcep import services
from apps.dcep.models import Account, Hold, HoldRelease
from apps.dcep.programmable import on_chain_events
from apps.dcep.selectors import deep_checks
from apps.events.feed import ChainEvent
from tests.api.conftest import assert_problem, make_app
from tests.dcep.helpers import created, funded_wallet, issue, open_wallet

pytestmark = pytest.mark.django_db(transaction=True)

MAX_EXAMPLES = int(os.environ.get("DCEP_PP_EXAMPLES", 8))
STEPS = int(os.environ.get("DCEP_PP_STEPS", 25))
_runs = itertools.count(1)
_heights = itertools.count(1)  # one chain for every example: heights only grow
OUTCOMES: collections.Counter = collections.Counter()  # recorded outcomes and actions, printed by the test
ACTIONS = (
    *["place"] * 3, *["emit"] * 3, "emit_block", *["redeliver"] * 2, *["concurrent"] * 2,
    "void_by_hand", "expire", "sweep", "freeze", "freeze",
)  # fmt: skip


@dataclass
class H:
    id: str
    lc: str
    amount: int
    seller: str
    capture_only: bool
    placed: dt.datetime  # the hold's created_at
    status: str = "pending"
    backdated: bool = False


class ProgrammableMachine(RuleBasedStateMachine):
    ctx: dict = {}  # {"app", "a", "b", "corp", "cb", "enterprise"}: set by the test

    def __init__(self) -> None:
        super().__init__()
        self.tag = f"pp{next(_runs)}-{uuid.uuid4().hex[:4]}"
        self.app = self.ctx["app"]
        self.lcs = [f"{self.tag}-LC{i}" for i in range(3)]
        self.h: dict[str, H] = {}
        self.events: list[ChainEvent] = []
        self.records: dict[tuple[str, str], str] = {}  # (hold id, event key) -> outcome
        self.frozen: dict[str, bool] = {}

    @initialize()
    def wallets(self):
        a, b = self.ctx["a"], self.ctx["b"]
        self.buyer = funded_wallet(a, 1_000_000, tier=1, kind="corporate", holder_tenant=self.ctx["enterprise"].slug)
        self.sellers = [open_wallet(b, tier=1), open_wallet(b, tier=1)]
        self.available, self.held = 1_000_000, 0
        self.paid = dict.fromkeys(self.sellers, 0)
        self.frozen = dict.fromkeys(self.sellers, False)

    @rule(data=st.data())
    def step(self, data):
        actions = [a for a in ACTIONS if self.h or a in ("place", "emit", "emit_block", "freeze")]
        action = data.draw(st.sampled_from(actions), label="action")
        OUTCOMES[f"action {action}"] += 1
        getattr(self, f"do_{action}")(data)

    # ------------------------------------------------------------------ model

    def apply(self, event: ChainEvent) -> None:
        """What one delivery of ``event`` must do, holds in the order they were placed."""
        lc = event.payload.get("lc_id")
        for h in self.h.values():
            if h.lc != lc or (h.id, event.key) in self.records:
                continue
            if event.block_time_ms < int(h.placed.timestamp() * 1000):
                continue  # a block made before the hold: not heard
            outcome = {"accepted": "captured", "rejected": None if h.capture_only else "voided"}.get(event.name)
            if outcome is None:
                continue
            if h.status != "pending":
                outcome = "ignored"
            elif h.backdated:
                self.release(h, "expired")
                outcome = "ignored"
            elif outcome == "captured" and self.frozen[h.seller]:
                outcome = "refused"
            elif outcome == "captured":
                h.status = "captured"
                self.held -= h.amount
                self.paid[h.seller] += h.amount
            else:
                self.release(h, "voided")
            self.records[(h.id, event.key)] = outcome
            OUTCOMES[outcome] += 1

    def release(self, h: H, status: str) -> None:
        h.status = status
        self.held -= h.amount
        self.available += h.amount

    def new_event(self, data, height: int, index: int) -> ChainEvent:
        lc = data.draw(st.sampled_from(self.lcs), label="lc")
        name = data.draw(st.sampled_from(["accepted", "rejected", "presented"]), label="event")
        payload = {"lc_id": lc} if name != "rejected" else {"lc_id": lc, "reason": "discrepant documents"}
        return ChainEvent(
            app_id=self.app.pk, height=height, index=index, seq=0, tx_id=uuid.uuid4().hex * 2,
            contract="trade_finance", function=name[:-2] if name != "presented" else "present", signer="bank",
            name=name, payload=payload, block_time_ms=int(timezone.now().timestamp() * 1000),
        )  # fmt: skip

    # ------------------------------------------------------------------ actions

    def do_place(self, data):
        if self.available == 0:
            return
        amount = data.draw(st.integers(1, min(self.available, 200_000)), label="amount")
        lc = data.draw(st.sampled_from(self.lcs), label="lc")
        seller = data.draw(st.sampled_from(self.sellers), label="seller")
        capture_only = data.draw(st.booleans(), label="capture only")
        release_on = {"app": str(self.app.pk), "capture": {"event": "accepted", "match": {"lc_id": lc}}}
        if not capture_only:
            release_on["void"] = {"event": "rejected", "match": {"lc_id": lc}}
        body = {"from_wallet": self.buyer, "to_wallet": seller, "amount": amount, "expires_in_s": 3600}
        resp = self.ctx["corp"].post("holds", {**body, "release_on": release_on})
        if self.frozen[seller]:  # the payee is checked when the hold is placed, and again when it is captured
            assert_problem(resp, 409, "wallet-frozen")
            return
        hold = created(resp)
        placed = Hold.objects.get(pk=hold["id"]).created_at
        self.h[hold["id"]] = H(hold["id"], lc, amount, seller, capture_only, placed)
        self.available -= amount
        self.held += amount

    def do_emit(self, data):
        event = self.new_event(data, next(_heights), 0)
        self.events.append(event)
        on_chain_events(self.app.pk, [event])
        self.apply(event)

    def do_emit_block(self, data):
        """Several events of one block in one call, some of them twice (at least once)."""
        height = next(_heights)
        block = [self.new_event(data, height, i) for i in range(data.draw(st.integers(2, 4), label="events"))]
        self.events += block
        sent = block + data.draw(st.lists(st.sampled_from(block), max_size=3), label="repeated")
        on_chain_events(self.app.pk, sent)
        for event in block:
            self.apply(event)

    def do_redeliver(self, data):
        """The reader restarted behind its cursor: a window of old events again. Nothing changes."""
        if not self.events:
            return
        start = data.draw(st.integers(0, len(self.events) - 1), label="from")
        on_chain_events(self.app.pk, self.events[start:] * data.draw(st.integers(1, 2), label="times"))

    def do_concurrent(self, data):
        """Three workers hand the same new events (and an old window) to the consumer at once."""
        fresh = [self.new_event(data, next(_heights), 0) for _ in range(data.draw(st.integers(1, 3), label="new"))]
        start = data.draw(st.integers(0, len(self.events)), label="from")
        window = self.events[start:] + fresh
        self.events += fresh
        barrier, errors = threading.Barrier(3), []

        def worker():
            try:
                barrier.wait(10)
                on_chain_events(self.app.pk, window)
            except Exception as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        for event in fresh:
            self.apply(event)

    def do_void_by_hand(self, data):
        h = self.h[data.draw(st.sampled_from(list(self.h)), label="hold")]
        resp = self.ctx["corp"].post(f"holds/{h.id}/void")
        if h.status == "pending" and not h.backdated:
            assert created(resp, 200)["status"] == "voided"
            self.release(h, "voided")
        else:
            assert_problem(resp, 409, "hold-expired" if h.status in ("pending", "expired") else "hold-resolved")

    def do_expire(self, data):
        pending = [h for h in self.h.values() if h.status == "pending" and not h.backdated]
        if pending:
            h = data.draw(st.sampled_from(pending), label="expire")
            Hold.objects.filter(pk=h.id).update(expires_at=timezone.now() - dt.timedelta(hours=1))
            h.backdated = True

    def do_sweep(self, data):
        services.holds_expire()
        for h in self.h.values():
            if h.status == "pending" and h.backdated:
                self.release(h, "expired")

    def do_freeze(self, data):
        seller = data.draw(st.sampled_from(self.sellers), label="seller")
        status = "active" if self.frozen[seller] else "frozen"
        created(self.ctx["b"].patch(f"wallets/{seller}", {"status": status}), 200)
        self.frozen[seller] = not self.frozen[seller]

    # ------------------------------------------------------------------ invariants

    @invariant()
    def model_matches_the_books(self):
        if not hasattr(self, "buyer"):
            return
        statuses = dict(Hold.objects.filter(pk__in=list(self.h)).values_list("pk", "status"))
        assert {str(k): v for k, v in statuses.items()} == {i: h.status for i, h in self.h.items()}
        records = HoldRelease.objects.filter(hold_id__in=list(self.h)).values_list("hold_id", "event_key", "outcome")
        assert {(str(h), k): o for h, k, o in records} == self.records
        accounts = dict(Account.objects.filter(number__in=[self.buyer, *self.sellers]).values_list("number", "balance"))
        held = Account.objects.get(number=self.buyer).held
        assert (accounts[self.buyer], held) == (self.available, self.held)
        assert {s: accounts[s] for s in self.sellers} == self.paid
        assert self.available + self.held + sum(self.paid.values()) == 1_000_000  # money only moves
        checks = deep_checks()
        assert all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]
        supply = created(self.ctx["cb"].get("supply"), 200)
        assert supply["ok"] and all(c["ok"] for c in supply["checks"]), supply["checks"]


def test_event_bound_holds_state_machine(tier1, clients, enterprise):
    issue(clients["cb"], "bank-a", 1_000_000 * (MAX_EXAMPLES + 100))  # each example funds one buyer; room to shrink
    app = make_app(clients["corp"].membership, "lc-machine", contract_template="trade_finance")
    ProgrammableMachine.ctx = {**clients, "app": app, "enterprise": enterprise}
    OUTCOMES.clear()
    try:
        run_state_machine_as_test(
            ProgrammableMachine,
            settings=settings(
                max_examples=MAX_EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
            ),
        )
    finally:
        print("outcomes:", dict(sorted(OUTCOMES.items())))

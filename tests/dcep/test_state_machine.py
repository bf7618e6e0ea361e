"""DCEP as a state machine: random sequences through the REST API against a model in memory.

Hypothesis drives wallets, exchanges, redemptions, payments (single and batch), holds,
captures, voids, expiries, freezes, closes, issuances, withdrawals, settlements and
idempotent replays through the API (``Client``), with a real tier-1 node. A small model
predicts every outcome — the status and refusal code of each call, every balance, hold,
vault, chain allocation, obligation and daily total — and after every step an invariant
compares the model with the API, the supply report, the journal's deep checks and the
chain.

Each example gets two fresh operator banks and a fresh enterprise on the same database
and chain, so examples do not see each other's wallets; chain totals are compared with
the totals when the example started.

One rule, ``step``, draws the action: Hypothesis turns separate rules on and off per
example (swarm testing), which with the few examples a fast suite allows would leave most
examples with two or three kinds of call. A failing run prints the drawn action and its
arguments (``Draw n (action): 'pay'`` …) before each step.
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import itertools
import json
import os
import uuid
from dataclasses import dataclass, field

import pytest
from django.db import connection
from django.db.models import Q
from django.utils import timezone
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from apps.dcep import services
from apps.dcep.institutions import institution_ensure
from apps.dcep.models import Account, Hold, Institution
from apps.dcep.selectors import deep_checks
from apps.dcep.settlement import settlement_run
from apps.dcep.tier1 import chain_supply
from apps.dcep.tiers import caps, new_wallet_number
from apps.tenants.models import Tenant
from bsn.ledger.merkle import verify_inclusion
from tests.api.conftest import assert_problem
from tests.dcep.conftest import Client, _member

pytestmark = pytest.mark.django_db(transaction=True)

# Bounded for `make test` (about 300 steps); DCEP_SM_EXAMPLES / DCEP_SM_STEPS for a deeper run.
MAX_EXAMPLES = int(os.environ.get("DCEP_SM_EXAMPLES", 10))
STEPS = int(os.environ.get("DCEP_SM_STEPS", 30))

_runs = itertools.count(1)
OUTCOMES: collections.Counter = collections.Counter()  # "action: code" -> count, printed by the test

# Amounts (fen) around the tier caps of docs/dcep.md.
EDGES = [1, 199_999, 200_000, 200_001, 500_000, 500_001, 1_000_000, 1_000_001, 2_000_000, 5_000_000, 5_000_001]
TIERS = st.sampled_from([1, 2, 3, 4])
OTHER = {"a": "b", "b": "a"}
# The actions and their weights; those needing a hold or an earlier keyed call wait for one.
ACTIONS = (
    *["pay"] * 4,
    *["batch"] * 2,
    *["hold"] * 3,
    *["capture"] * 3,
    "void",
    *["expire"] * 2,
    *["sweep"] * 2,
    *["exchange"] * 2,
    "redeem",
    *["update_wallet"] * 2,
    "open_wallet",
    "issue",
    "withdraw",
    "drain",
    "settle",
    "replay",
    "replay_altered",
    "key_of_another_tenant",
    "forbidden",
)
NEEDS = {
    "capture": "h", "void": "h", "expire": "h", "replay": "sent", "replay_altered": "sent",
    "key_of_another_tenant": "sent", "sweep": "h",
}  # fmt: skip
STATUS_OF = {"same-wallet": 400, "invalid": 400, "not-allowed": 403, "not-found": 404, "idempotency-key-reused": 422}


@dataclass
class W:
    number: str
    op: str
    tier: int
    kind: str
    holder: bool  # a corporate wallet opened for the enterprise
    status: str = "active"
    available: int = 0
    held: int = 0
    day_out: dict = field(default_factory=dict)  # UTC date -> outgoing fen (payments and holds)

    def spent(self, day: dt.date) -> int:
        return self.day_out.get(day, 0)


@dataclass
class H:
    id: str
    src: str
    dst: str
    amount: int
    expires_at: dt.datetime
    status: str = "pending"
    captured: int = 0


@dataclass
class Sent:
    """A keyed request that went through the idempotency layer, and what it answered."""

    actor: str
    method: str
    path: str
    body: dict
    key: str
    status: int
    content: bytes
    content_type: str


def status_refusal(w: W) -> str | None:
    return {"frozen": "wallet-frozen", "closed": "wallet-closed"}.get(w.status)


def incoming_refusal(dst: W, amount: int) -> str | None:
    limit = caps(dst.tier).balance
    if status_refusal(dst):
        return status_refusal(dst)
    if limit is not None and dst.available + dst.held + amount > limit:
        return "over-balance-cap"
    return None


def may_debit(actor: str, w: W) -> bool:
    """The wallet's operator, or the enterprise a corporate wallet was opened for."""
    return actor == w.op or (actor == "corp" and w.holder)


class DcepMachine(RuleBasedStateMachine):
    """The model: wallets, holds, vaults, chain allocations, obligations and stored responses."""

    ctx: dict = {}  # set by the test: {"region", "cb"} (the central bank's client)

    def __init__(self) -> None:
        super().__init__()
        tag = f"sm{next(_runs)}-{uuid.uuid4().hex[:6]}"
        self.slug: dict[str, str] = {}
        self.clients = {"cb": self.ctx["cb"]}
        for op in ("a", "b"):
            inst = institution_ensure(
                slug=f"{tag}-{op}", name=f"Bank {op} {tag}", kind=Institution.Kind.OPERATOR_BANK,
                home_region=self.ctx["region"],
            )  # fmt: skip
            self.slug[op] = inst.slug
            self.clients[op] = Client(_member(inst.tenant))
        self.enterprise = Tenant.objects.create(slug=f"{tag}-corp", name=f"Corp {tag}", kind=Tenant.Kind.ENTERPRISE)
        self.clients["corp"] = Client(_member(self.enterprise))
        self.w: dict[str, W] = {}  # by number, in the order opened
        self.h: dict[str, H] = {}  # by id, in the order placed
        self.vault = {"a": 0, "b": 0}
        self.alloc = {"a": 0, "b": 0}  # on the chain
        self.issued = self.withdrawn = 0
        self.unsettled: list[tuple[str, str, int, str | None]] = []  # obligor, obligee, fen, transfer id
        self.sent: list[Sent] = []
        self.turn = 0
        base = chain_supply()
        self.base_issued, self.base_withdrawn = base["issued"], base["withdrawn"]

    # ------------------------------------------------------------------ calls

    def call(self, actor, method, path, body, *, stored=True, key=None, replay=False):
        """A keyed POST/PATCH (a fresh key unless given); kept for replays if it reaches the idempotency layer."""
        key = key or f"sm-{uuid.uuid4().hex}"
        self.t0 = timezone.now()
        if method == "POST":
            resp = self.clients[actor].post(path, body, key=key)
        else:
            resp = self.clients[actor].patch(path, body, key=key)
        self.t1 = timezone.now()
        assume(self.t0.date() == self.t1.date())  # a call across UTC midnight: which day's cap is ambiguous
        assert resp.status_code < 500, resp.content
        if not replay:
            assert not resp.has_header("Idempotent-Replayed")
        if stored:
            kept = Sent(
                actor, method, path, copy.deepcopy(body), key, resp.status_code, resp.content, resp["Content-Type"]
            )
            self.sent.append(kept)
        return resp

    def expect(self, action: str, resp, code: str | None, *, ok: int = 201):
        """``code`` None: success with ``ok``; else that refusal with its documented status."""
        OUTCOMES[f"{action}: {code or 'ok'}"] += 1
        if code is None:
            assert resp.status_code == ok, resp.content
            return resp.json()
        return assert_problem(resp, STATUS_OF.get(code, 409), code)

    @property
    def today(self) -> dt.date:
        return self.t0.date()

    def draw_wallet(self, data, label: str, *, funded=False, besides: W | None = None, actor=None, empty=False) -> W:
        """A wallet (in the order opened), never ``besides`` (when there is another). Mostly (4 in 5,
        each) one with money if ``funded``, one ``actor`` may debit if given, an empty one if ``empty``."""
        numbers = [n for n in self.w if besides is None or n != besides.number] or list(self.w)
        for wanted, keep in (
            (funded, lambda w: w.available > 0),
            (actor, lambda w: may_debit(actor, w)),
            (empty, lambda w: w.available + w.held == 0),
        ):
            if wanted and any(keep(self.w[n]) for n in numbers) and data.draw(st.integers(0, 4), label="bias") < 4:
                numbers = [n for n in numbers if keep(self.w[n])]
        return self.w[data.draw(st.sampled_from(numbers), label=label)]

    def draw_pair(self, data, actor: str | None = None) -> tuple[W, W]:
        """Payer and payee: one time in ten the same wallet."""
        src = self.draw_wallet(data, "from", funded=True, actor=actor)
        same = data.draw(st.integers(0, 9), label="same wallet if 9") == 9
        return src, src if same else self.draw_wallet(data, "to", besides=src)

    def draw_actor(self, data, w: W) -> str:
        """Mostly one who may debit ``w``; sometimes the enterprise or the other operator, who may not."""
        choices = [w.op] * 3 + (["corp"] * 3 if w.holder else []) + ["corp", OTHER[w.op]]
        return data.draw(st.sampled_from(choices), label="actor")

    @staticmethod
    def draw_amount(data, available: int, label: str = "amount", tier: int | None = None) -> int:
        """Part of what is available, all of it, one fen more, a tier cap, or anything."""
        modes = ["part", "part", "small", "all", "over", "edge", "big"] + (["single cap"] if tier else [])
        mode = data.draw(st.sampled_from(modes), label=f"{label} is")
        if mode == "single cap":  # the most one payment may move: the daily cap follows soon
            return caps(tier).single or max(available, 1)
        if mode == "part":
            return data.draw(st.integers(1, max(available, 1)), label=label)
        if mode == "small":
            return data.draw(st.integers(1, 1_000), label=label)
        if mode == "edge":
            return data.draw(st.sampled_from(EDGES), label=label)
        if mode == "big":
            return data.draw(st.integers(1, 6_000_000), label=label)
        return max(available, 1) if mode == "all" else available + 1

    # ------------------------------------------------------------------ predictions

    @staticmethod
    def payment_refusal(actor: str, src: W, dst: W, amount: int, day: dt.date) -> str | None:
        if not may_debit(actor, src):
            return "not-found"
        if src.number == dst.number:
            return "same-wallet"
        if status_refusal(src) or status_refusal(dst):
            return status_refusal(src) or status_refusal(dst)
        limits = caps(src.tier)
        if limits.single is not None and amount > limits.single:
            return "over-single-cap"
        if limits.daily is not None and src.spent(day) + amount > limits.daily:
            return "over-daily-cap"
        if src.available < amount:
            return "insufficient-funds"
        return incoming_refusal(dst, amount)

    @staticmethod
    def apply_payment(unsettled: list, src: W, dst: W, amount: int, tid, day: dt.date) -> None:
        src.available -= amount
        src.day_out[day] = src.spent(day) + amount
        dst.available += amount
        if src.op != dst.op:
            unsettled.append((src.op, dst.op, amount, tid))

    def expired(self, hold: H) -> bool:
        """Had the hold expired when the last call ran? (Expiries are an hour away or moved into the past.)"""
        assert hold.expires_at <= self.t0 or hold.expires_at > self.t1
        return hold.expires_at <= self.t0

    def release(self, hold: H, status: str) -> None:
        src = self.w[hold.src]
        src.held -= hold.amount
        src.available += hold.amount
        hold.status = status

    # ------------------------------------------------------------------ driving

    @initialize(data=st.data())
    def fund(self, data):
        """Both operators issued to; four wallets (one corporate for the enterprise) exchanged into; a hold."""
        for op in ("a", "b"):
            self.issue(op, data.draw(st.integers(2_000_000, 40_000_000), label=f"issue to {op}"))
        wallets = []
        for op, kind in (("a", "personal"), ("b", "holder"), ("a", "personal"), ("b", "personal")):
            wallets.append(self.open_wallet(op, data.draw(TIERS, label="tier"), kind))
            self.exchange(wallets[-1], data.draw(st.integers(100_000, 1_500_000), label="exchange"), op)
        amount, short = data.draw(st.integers(1, 50_000), label="hold"), self.draw_short(data)
        self.hold(wallets[0].op, wallets[0], wallets[1], amount, short)

    @rule(data=st.data())
    def step(self, data):
        actions = [a for a in ACTIONS if a not in NEEDS or getattr(self, NEEDS[a])]
        action = data.draw(st.sampled_from(actions), label="action")
        getattr(self, f"do_{action}")(data)

    # ------------------------------------------------------------------ wallets

    def open_wallet(self, op: str, tier: int, kind: str, key: str | None = None) -> W:
        holder = kind == "holder"
        body = {"holder_name": f"holder {len(self.w)}", "tier": tier, "kind": "corporate" if holder else kind}
        if holder:
            body["holder_tenant"] = self.enterprise.slug
        wallet = self.expect("open", self.call(op, "POST", "wallets", body, key=key), None)
        limits = caps(tier)
        assert (wallet["tier"], wallet["status"], wallet["balance"], wallet["available"], wallet["held"]) == (
            tier, "active", 0, 0, 0,
        )  # fmt: skip
        assert wallet["caps"] == {"balance": limits.balance, "single": limits.single, "daily": limits.daily}
        assert (wallet["operator"], wallet["kind"]) == (self.slug[op], body["kind"])
        assert wallet["holder_tenant"] == (self.enterprise.slug if holder else None)
        w = self.w[wallet["id"]] = W(wallet["id"], op, tier, body["kind"], holder)
        return w

    def do_open_wallet(self, data):
        kind = data.draw(st.sampled_from(["personal", "personal", "corporate", "holder"]), label="kind")
        self.open_wallet(data.draw(st.sampled_from(["a", "b"]), label="op"), data.draw(TIERS, label="tier"), kind)

    def do_update_wallet(self, data):
        statuses = st.sampled_from(["active", "frozen", "frozen", "closed"])
        change = data.draw(
            st.one_of(
                st.fixed_dictionaries({"status": statuses}),
                st.fixed_dictionaries({"tier": TIERS}),
                st.fixed_dictionaries({"status": statuses, "tier": TIERS}),
            ),
            label="change",
        )
        status, tier = change.get("status"), change.get("tier")
        w = self.draw_wallet(data, "wallet", empty=status == "closed")
        resp = self.call(w.op, "PATCH", f"wallets/{w.number}", change)
        # "closed is final": a closed wallet takes no other status and no new tier.
        if w.status == "closed" and (status != "closed" or (tier is not None and tier != w.tier)):
            self.expect("update", resp, "wallet-closed")
        elif status == "closed" and w.status != "closed" and (w.available or w.held):
            self.expect("update", resp, "wallet-not-empty")
        else:
            body = self.expect(f"update to {status or 'tier'}", resp, None, ok=200)
            w.status, w.tier = status or w.status, tier or w.tier
            limits = caps(w.tier)
            assert (body["status"], body["tier"]) == (w.status, w.tier)
            assert body["caps"] == {"balance": limits.balance, "single": limits.single, "daily": limits.daily}

    # ------------------------------------------------------------------ tier 1

    def issue(self, op: str, amount: int) -> None:
        resp = self.call("cb", "POST", "issuances", {"operator": self.slug[op], "amount": amount})
        body = self.expect("issue", resp, None)
        assert (body["operator"], body["amount"], body["transfer"]["kind"]) == (self.slug[op], amount, "issuance")
        assert len(body["receipt"]["tx_id"]) == 64 and body["receipt"]["height"] >= 1
        self.vault[op] += amount
        self.alloc[op] += amount
        self.issued += amount

    def do_issue(self, data):
        op = data.draw(st.sampled_from(["a", "b"]), label="op")
        self.issue(op, data.draw(st.integers(1, 30_000_000), label="amount"))

    def do_withdraw(self, data):
        op = data.draw(st.sampled_from(["a", "b"]), label="op")
        vault, alloc = self.vault[op], self.alloc[op]
        # Beyond the allocation (but within the vault) once incoming obligations were redeemed into it.
        beyond = ["over-allocation"] * (3 if alloc < vault else 1)
        how = data.draw(st.sampled_from(["part", "all", "over-vault", *beyond]), label="how")
        if how == "part":
            amount = data.draw(st.integers(1, max(vault, 1)), label="amount")
        elif how == "all":
            amount = max(vault, 1)
        elif how == "over-vault":
            amount = vault + data.draw(st.integers(1, 1_000), label="extra")
        else:  # within the vault, beyond the allocation (incoming obligations not settled yet), if it can be
            amount = alloc + 1 if alloc < vault else vault + 1
        resp = self.call("cb", "POST", "withdrawals", {"operator": self.slug[op], "amount": amount})
        if amount > vault:
            self.expect("withdraw over the vault", resp, "insufficient-funds")
        elif amount > alloc:  # the vault was debited, the chain refused, a reversal put it back
            self.expect("withdraw over the allocation", resp, "insufficient-funds")
        else:
            self.expect("withdraw", resp, None)
            self.vault[op] -= amount
            self.alloc[op] -= amount
            self.withdrawn += amount

    def do_settle(self, data):
        with_id = [u for u in self.unsettled if u[3] is not None]
        picks = st.lists(st.integers(0, len(with_id) - 1), max_size=3, unique=True) if with_id else st.just([])
        to_prove = [with_id[i] for i in data.draw(picks, label="to prove")]
        for obligor, _, _, tid in to_prove:
            assert_problem(self.clients[obligor].get(f"transfers/{tid}/proof"), 409, "not-settled")
        resp = self.clients["cb"].post("settlements")
        assert resp.status_code == 202, resp.content
        batch = settlement_run(resp.json()["id"])
        assert batch.status == "anchored", (batch.status, batch.last_error)
        net = {"a": 0, "b": 0}
        for obligor, obligee, amount, _ in self.unsettled:
            net[obligor] -= amount
            net[obligee] += amount
        for op in ("a", "b"):
            assert batch.positions.get(self.slug[op], 0) == net[op], (batch.positions, net)
            self.alloc[op] += net[op]
        OUTCOMES[f"settle: {'with obligations' if self.unsettled else 'empty'}"] += 1
        self.unsettled = []
        for obligor, obligee, amount, tid in to_prove:  # each proof checks against the root on its own
            proof = self.clients[obligor].get(f"transfers/{tid}/proof")
            assert proof.status_code == 200, proof.content
            proof = proof.json()
            assert (proof["settlement"], proof["merkle_root"]) == (str(batch.pk), batch.merkle_root)
            assert (proof["tree_size"], proof["anchor"]["height"]) == (batch.transfer_count, batch.anchor_height)
            path = [bytes.fromhex(h) for h in proof["audit_path"]]
            root = bytes.fromhex(proof["merkle_root"])
            assert verify_inclusion(proof["leaf"].encode(), proof["leaf_index"], proof["tree_size"], path, root)
            leaf = json.loads(proof["leaf"])
            assert (leaf["id"], leaf["obligation"]) == (tid, amount)
            assert (leaf["obligor"], leaf["obligee"]) == (self.slug[obligor], self.slug[obligee])
            OUTCOMES["settle: proof checked"] += 1

    # ------------------------------------------------------------------ vault <-> wallet

    def exchange(self, w: W, amount: int, actor: str) -> None:
        resp = self.call(actor, "POST", "exchanges", {"wallet": w.number, "amount": amount})
        if actor != w.op:
            code = "not-found"
        elif self.vault[w.op] < amount:
            code = "insufficient-funds"
        else:
            code = incoming_refusal(w, amount)
        body = self.expect("exchange", resp, code)
        if code is None:
            assert (body["kind"], body["to_wallet"], body["amount"]) == ("exchange", w.number, amount)
            self.vault[w.op] -= amount
            w.available += amount

    def do_exchange(self, data):
        w = self.draw_wallet(data, "wallet")
        actor = data.draw(st.sampled_from([w.op, w.op, w.op, OTHER[w.op]]), label="actor")
        self.exchange(w, self.draw_amount(data, self.vault[w.op]), actor)

    def do_redeem(self, data):
        w = self.draw_wallet(data, "wallet", funded=True)
        amount = self.draw_amount(data, w.available)
        resp = self.call(w.op, "POST", "redemptions", {"wallet": w.number, "amount": amount})
        code = status_refusal(w) or ("insufficient-funds" if w.available < amount else None)
        body = self.expect("redeem", resp, code)
        if code is None:
            assert (body["kind"], body["from_wallet"], body["amount"]) == ("redemption", w.number, amount)
            w.available -= amount
            self.vault[w.op] += amount

    def do_drain(self, data):
        """Redeem every wallet of one operator: its vault may then exceed its allocation on the chain
        (incoming obligations not settled yet), which a withdrawal of the vault must not take."""
        op = data.draw(st.sampled_from(["a", "b"]), label="op")
        for w in [w for w in self.w.values() if w.op == op and w.available and w.status == "active"]:
            resp = self.call(op, "POST", "redemptions", {"wallet": w.number, "amount": w.available})
            self.expect("redeem", resp, None)
            self.vault[op] += w.available
            w.available = 0

    # ------------------------------------------------------------------ payments

    def do_pay(self, data):
        src, dst = self.draw_pair(data)
        actor, amount = self.draw_actor(data, src), self.draw_amount(data, src.available, tier=src.tier)
        ghost = data.draw(st.integers(0, 19), label="to no wallet if 19") == 19
        to = new_wallet_number() if ghost else dst.number  # a valid number nobody holds
        body = {"from_wallet": src.number, "to_wallet": to, "amount": amount, "memo": f"m{amount % 97}"}
        resp = self.call(actor, "POST", "payments", body)
        code = "not-found" if ghost else self.payment_refusal(actor, src, dst, amount, self.today)
        transfer = self.expect("pay", resp, code)
        if code is None:
            assert (transfer["kind"], transfer["amount"], transfer["memo"]) == ("payment", amount, body["memo"])
            assert (transfer["from_operator"], transfer["to_operator"]) == (self.slug[src.op], self.slug[dst.op])
            self.apply_payment(self.unsettled, src, dst, amount, transfer["id"], self.today)

    def do_batch(self, data):
        actor = data.draw(st.sampled_from(["a", "b", "corp"]), label="actor")
        linked = data.draw(st.booleans(), label="linked")
        items = []
        for _ in range(data.draw(st.integers(1, 6), label="size")):
            src, dst = self.draw_pair(data, actor)
            items.append((src.number, dst.number, self.draw_amount(data, src.available, tier=src.tier)))
        payments = [{"from_wallet": s, "to_wallet": d, "amount": a} for s, d, a in items]
        resp = self.call(actor, "POST", "payments/batch", {"payments": payments, "linked": linked})
        # Applied in order on a copy: later payments see the earlier ones.
        wallets, fresh, codes = copy.deepcopy(self.w), [], []
        for index, (s, d, a) in enumerate(items):
            code = self.payment_refusal(actor, wallets[s], wallets[d], a, self.today)
            codes.append(code)
            if code is None:  # the transfer id is known once the answer is checked: the index until then
                self.apply_payment(fresh, wallets[s], wallets[d], a, index, self.today)
            elif linked:
                break
        if linked and codes[-1] is not None:
            body = self.expect("linked batch", resp, "linked-batch-failed")
            assert (body["applied"], body["succeeded"], body["count"]) == (False, 0, len(items))
            refused = len(codes) - 1
            got = [(r["index"], r["status"], r["code"]) for r in body["results"]]
            expected = [(i, 424, "linked-batch-failed") for i in range(len(items))]
            expected[refused] = (refused, STATUS_OF.get(codes[refused], 409), codes[refused])
            assert got == expected, (body["results"], codes)
            return
        body = self.expect("linked batch" if linked else "batch", resp, None)
        assert (body["applied"], body["linked"], body["count"]) == (True, linked, len(items))
        got = [(r["index"], r["status"], r.get("code")) for r in body["results"]]
        expected = [(i, 201 if c is None else STATUS_OF.get(c, 409), c) for i, c in enumerate(codes)]
        assert got == expected, (body["results"], codes)
        assert body["succeeded"] == codes.count(None)
        for code in codes:
            OUTCOMES[f"batch item: {code or 'ok'}"] += 1
        ids = {r["index"]: r["transfer"]["id"] for r in body["results"] if "transfer" in r}
        self.w = wallets
        self.unsettled += [(o, e, x, ids[i]) for o, e, x, i in fresh]

    # ------------------------------------------------------------------ holds

    def do_hold(self, data):
        src, dst = self.draw_pair(data)
        actor, amount = self.draw_actor(data, src), self.draw_amount(data, src.available, tier=src.tier)
        self.hold(actor, src, dst, amount, self.draw_short(data))

    @staticmethod
    def draw_short(data) -> bool:
        """One hold in four is placed for 1 s (and its second passed at once, see ``hold``)."""
        return data.draw(st.integers(0, 3), label="expires in 1 s if 3") == 3

    def hold(self, actor: str, src: W, dst: W, amount: int, short: bool) -> None:
        body = {
            "from_wallet": src.number,
            "to_wallet": dst.number,
            "amount": amount,
            "expires_in_s": 1 if short else 3600,
        }
        resp = self.call(actor, "POST", "holds", body)
        code = self.payment_refusal(actor, src, dst, amount, self.today)
        hold = self.expect("hold", resp, code)
        if code is None:
            assert (hold["status"], hold["amount"], hold["captured"]) == ("pending", amount, 0)
            h = self.h[hold["id"]] = H(
                hold["id"], src.number, dst.number, amount, Hold.objects.get(pk=hold["id"]).expires_at
            )
            lifetime = dt.timedelta(seconds=body["expires_in_s"])
            assert self.t0 + lifetime <= h.expires_at <= self.t1 + lifetime
            src.available -= amount
            src.held += amount
            src.day_out[self.today] = src.spent(self.today) + amount
            if short:  # its second passes now, not at some step of wall-clock time: outcomes stay reproducible
                self.backdate(h)

    def backdate(self, h: H) -> None:
        """Move a hold's expiry into the past (dcep_hold has no trigger), as time would."""
        h.expires_at = timezone.now() - dt.timedelta(hours=1)
        with connection.cursor() as cursor:
            cursor.execute("UPDATE dcep_hold SET expires_at = %s WHERE id = %s", [h.expires_at, h.id])

    def draw_hold(self, data) -> tuple[H, str | None]:
        """A hold and who acts on it: the payer's operator, the enterprise, or (None) a stranger to it."""
        ids = list(self.h)
        pending = [i for i in ids if self.h[i].status == "pending"]
        if pending and data.draw(st.integers(0, 4), label="bias") < 4:
            ids = pending
        h = self.h[data.draw(st.sampled_from(ids), label="hold")]
        src = self.w[h.src]
        who = data.draw(st.sampled_from(["owner", "owner", "owner", "corp", "other"]), label="actor")
        return h, {"owner": src.op, "corp": "corp" if src.holder else src.op, "other": None}[who]

    def resolve_refusal(self, h: H) -> str | None:
        if h.status == "expired" or (h.status == "pending" and self.expired(h)):
            return "hold-expired"
        return "hold-resolved" if h.status != "pending" else None

    def do_capture(self, data):
        h, actor = self.draw_hold(data)
        if actor is None:  # not the payer's side: the hold is not visible (404 before the key is kept)
            resp = self.call(OTHER[self.w[h.src].op], "POST", f"holds/{h.id}/capture", {}, stored=False)
            assert_problem(resp, 404, "not-found")
            return
        how = data.draw(st.sampled_from(["all", "full", "partial", "partial", "over"]), label="capture")
        value = {"all": None, "full": h.amount, "over": h.amount + 1}.get(how)
        if how == "partial":
            value = data.draw(st.integers(1, max(h.amount - 1, 1)), label="value")
        resp = self.call(actor, "POST", f"holds/{h.id}/capture", {} if value is None else {"amount": value})
        value = h.amount if value is None else value
        code = self.resolve_refusal(h)
        if code is None and value > h.amount:
            code = "invalid"
        code = code or incoming_refusal(self.w[h.dst], value)
        out = self.expect("capture" if value == h.amount else "partial capture", resp, code, ok=200)
        if code is None:
            assert (out["status"], out["captured"]) == ("captured", value)
            src, dst = self.w[h.src], self.w[h.dst]
            src.held -= h.amount
            src.available += h.amount - value
            dst.available += value
            h.status, h.captured = "captured", value
            if src.op != dst.op:
                self.unsettled.append((src.op, dst.op, value, None))

    def do_void(self, data):
        h, actor = self.draw_hold(data)
        if actor is None:
            resp = self.call(OTHER[self.w[h.src].op], "POST", f"holds/{h.id}/void", {}, stored=False)
            assert_problem(resp, 404, "not-found")
            return
        resp = self.call(actor, "POST", f"holds/{h.id}/void", {})
        code = self.resolve_refusal(h)
        out = self.expect("void", resp, code, ok=200)
        if code is None:
            assert out["status"] == "voided"
            self.release(h, "voided")

    def do_expire(self, data):
        self.backdate(self.h[data.draw(st.sampled_from(list(self.h)), label="hold")])

    def do_sweep(self, data):
        """What beat does every few seconds: release every pending hold past its expiry."""
        self.t0 = timezone.now()
        released = services.holds_expire()
        self.t1 = timezone.now()
        due = [h for h in self.h.values() if h.status == "pending" and self.expired(h)]
        for h in due:
            self.release(h, "expired")
        OUTCOMES[f"sweep: {'released' if due else 'nothing'}"] += 1
        assert released >= len(due)  # holds another example moved into the past may go in the same sweep

    # ------------------------------------------------------------------ idempotency

    def do_replay(self, data):
        sent = data.draw(st.sampled_from(self.sent), label="replayed")
        resp = self.call(sent.actor, sent.method, sent.path, sent.body, key=sent.key, stored=False, replay=True)
        assert (resp.status_code, resp.content) == (sent.status, sent.content)
        assert (resp["Content-Type"], resp["Idempotent-Replayed"]) == (sent.content_type, "true")
        OUTCOMES[f"replay: {sent.status}"] += 1

    def do_key_of_another_tenant(self, data):
        """Keys are scoped per tenant: another tenant's key is a fresh key here."""
        used = {(s.actor, s.key) for s in self.sent}
        unused = [(s, op) for s in self.sent for op in ("a", "b") if (op, s.key) not in used]
        if not unused:
            return
        sent, op = data.draw(st.sampled_from(unused), label="key of, used by")
        self.open_wallet(op, data.draw(TIERS, label="tier"), "personal", key=sent.key)
        OUTCOMES["another tenant's key: fresh"] += 1

    def do_replay_altered(self, data):
        sent = data.draw(st.sampled_from(self.sent), label="replayed with another body")
        body = copy.deepcopy(sent.body)
        if "amount" in body:
            body["amount"] += 1
        elif "payments" in body:
            body["linked"] = not body["linked"]
        elif "holder_name" in body:
            body["holder_name"] += " (altered)"
        elif "status" in body or "tier" in body:
            body["tier"] = 1 + body.get("tier", 1) % 4
        elif sent.path.endswith("/capture"):
            body["amount"] = 1
        else:  # a void: its body is not read, but it is part of the fingerprint
            body["note"] = "altered"
        resp = self.call(sent.actor, sent.method, sent.path, body, key=sent.key, stored=False)
        self.expect("replay with another body", resp, "idempotency-key-reused")

    # ------------------------------------------------------------------ who may not

    def do_forbidden(self, data):
        which = data.draw(
            st.sampled_from(["corp exchange", "operator issues", "operator supply", "corp opens", "operator settles",
                             "foreign wallet"]),
            label="forbidden",
        )  # fmt: skip
        op = data.draw(st.sampled_from(["a", "b"]), label="op")
        w = self.draw_wallet(data, "wallet")
        if which == "corp exchange":
            resp = self.call("corp", "POST", "exchanges", {"wallet": w.number, "amount": 1}, stored=False)
        elif which == "operator issues":
            resp = self.call(op, "POST", "issuances", {"operator": self.slug[op], "amount": 1}, stored=False)
        elif which == "operator supply":
            resp = self.clients[op].get("supply")
        elif which == "corp opens":
            body = {"holder_name": "x", "tier": 2, "kind": "personal"}
            resp = self.call("corp", "POST", "wallets", body, stored=False)
        elif which == "operator settles":
            resp = self.clients[op].post("settlements")
        else:  # another operator's wallet is a 404 (before the idempotency layer: nothing kept)
            resp = self.call(OTHER[w.op], "PATCH", f"wallets/{w.number}", {"status": "frozen"}, stored=False)
            assert_problem(resp, 404, "not-found")
            return
        assert_problem(resp, 403, "not-allowed")

    # ------------------------------------------------------------------ invariants

    @invariant()
    def model_matches_api_journal_and_chain(self):
        # Wallets as one party sees them through the API (each party in turn)...
        viewer = ("a", "b", "corp")[self.turn % 3]
        self.turn += 1
        page = self.clients[viewer].get("wallets", {"page_size": 200})
        assert page.status_code == 200, page.content
        seen = {row["id"]: row for row in page.json()["results"]}
        expected = {n for n, w in self.w.items() if (w.holder if viewer == "corp" else w.op == viewer)}
        assert set(seen) == expected, (viewer, set(seen) ^ expected)
        for number in expected:
            w, row = self.w[number], seen[number]
            got = (row["balance"], row["available"], row["held"], row["status"], row["tier"])
            assert got == (w.available + w.held, w.available, w.held, w.status, w.tier), (number, got, w)
        # ... and every wallet in the database, with its outgoing total of the day; every hold.
        today = timezone.now().date()
        rows = Account.objects.filter(number__in=list(self.w)).values_list(
            "number", "balance", "held", "status", "tier", "day_out_date", "day_out"
        )
        assert len(rows) == len(self.w)
        for number, balance, held, status, tier, day, out in rows:
            w = self.w[number]
            got = (balance, held, status, tier, out if day == today else 0)
            assert got == (w.available, w.held, w.status, w.tier, w.spent(today)), (number, got, w)
        for pk, status, captured in Hold.objects.filter(pk__in=list(self.h)).values_list("pk", "status", "captured"):
            h = self.h[str(pk)]
            assert (status, captured) == (h.status, h.captured), (h, status, captured)
        # The supply as the central bank sees it: every check ok, our operators as modelled.
        resp = self.clients["cb"].get("supply")
        assert resp.status_code == 200, resp.content
        supply = resp.json()
        assert supply["ok"] and all(c["ok"] for c in supply["checks"]), [c for c in supply["checks"] if not c["ok"]]
        for op in ("a", "b"):
            mine = [w for w in self.w.values() if w.op == op]
            expected = {
                "vault": self.vault[op],
                "wallets": sum(w.available for w in mine),
                "held": sum(w.held for w in mine),
                "unsettled_out": sum(u[2] for u in self.unsettled if u[0] == op),
                "unsettled_in": sum(u[2] for u in self.unsettled if u[1] == op),
                "withdrawing": 0,
                "chain_balance": self.alloc[op],
            }
            assert supply["operators"][self.slug[op]] == expected, (op, supply["operators"][self.slug[op]], expected)
        assert (supply["issued"], supply["withdrawn"]) == (
            self.base_issued + self.issued, self.base_withdrawn + self.withdrawn,
        )  # fmt: skip
        # issued - withdrawn = Σ chain allocations = Σ (vault + wallets + held): in total, and in the model.
        figures = supply["operators"].values()
        circulating = supply["issued"] - supply["withdrawn"]
        assert circulating == sum(f["chain_balance"] for f in figures)
        assert circulating == sum(f["vault"] + f["wallets"] + f["held"] for f in figures) == supply["in_circulation"]
        in_model = sum(self.vault.values()) + sum(w.available + w.held for w in self.w.values())
        assert self.issued - self.withdrawn == sum(self.alloc.values()) == in_model
        # The journal: balances = sums of entries, legs sum to zero, hash chains, held = pending holds.
        checks = deep_checks()
        assert all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]
        negative = Account.objects.exclude(kind=Account.Kind.ISSUANCE).filter(Q(balance__lt=0) | Q(held__lt=0))
        assert not negative.exists()


def test_dcep_state_machine(tier1, institutions, home_region, monkeypatch):
    # Settlements are run in-process by the machine; none is queued for a worker.
    monkeypatch.setattr("apps.dcep.tasks.enqueue_settlement", lambda settlement_id: None)
    cb, _, _ = institutions
    DcepMachine.ctx = {"region": home_region, "cb": Client(_member(cb.tenant))}
    OUTCOMES.clear()
    try:
        run_state_machine_as_test(
            DcepMachine,
            settings=settings(
                max_examples=MAX_EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
            ),
        )
    finally:
        print("outcomes:", dict(sorted(OUTCOMES.items())))

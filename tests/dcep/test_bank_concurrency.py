"""The concurrent bank: ≥ 10,000 random payments through the HTTP API on a real gunicorn.

gunicorn runs as deployed (``bsn.wsgi``, like deploy/supervisor/embedded.conf; 3 workers × 4 threads)
on the pytest database; 16 client threads (one ``requests.Session`` each) pay among 56
wallets of two operator banks (tiers 1-4, so the caps bite), same and cross operator,
with deliberate over-cap and overdraft attempts, resends of the same Idempotency-Key
(at once, later, concurrently from two threads) and a few batches. Mid-run a gunicorn
worker is SIGKILLed (twice). A client does what a bank's client does: a request that got
no answer (connection reset by the kill, a timeout) is sent again with the same key and
body until it is answered.

Afterwards the invariants, as code:

- money is conserved to the fen: Σ wallets + vaults + held = issued − withdrawn, before
  and after; ``GET supply`` is ok (journal and chain) and every ``deep_checks()`` is ok;
- no negative balance, no cap exceeded (balance, single payment, daily outgoing);
- the journal's payments are exactly the acknowledged ones: each acknowledged transfer
  id once, with its amount and wallets (memo = the key), its two legs right;
- every key has exactly one outcome: every answer to a key is byte-identical, the work
  ran at most once per key (at most one answer without ``Idempotent-Replayed``, none
  only when the first answer was lost to a kill or a client timeout), and the stored
  response is what the client saw;
- every wallet's balance = its opening balance + acknowledged in − acknowledged out.

The figures (payments attempted, acknowledged, refused by code, resends, kills, wall
time, payments/s, money before/after) are printed and recorded as test properties.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.db.models import Count, Sum

from apps.dcep.models import Account, IdempotencyRecord, Institution, Transfer
from apps.dcep.selectors import deep_checks
from apps.dcep.tiers import caps
from apps.tenants.services import token_issue
from tests.integration.conftest import _database_url, wait_for
from tests.ledger.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("BSN_BANK_SEED", "20240601"))
# New payments (single payments + batch items; resends not counted). The env override is for
# trying the test quickly; the issue asks for at least 10,000.
PAYMENTS = int(os.environ.get("BSN_BANK_PAYMENTS", "10000"))
CLIENTS = 16
# The whole load phase, kills and resends included (a shared or slow machine may raise it).
# A bound, not a speed goal (speed is measured by `make bench`): on an idle 2-core machine the
# load phase takes about 90-140 s, on a loaded one up to ~230 s.
LOAD_DEADLINE_S = float(os.environ.get("BSN_BANK_DEADLINE_S", "420"))
KILL_AT = (0.30, 0.65)  # SIGKILL a gunicorn worker when this share of the payments is claimed
ISSUE = 300_000_000  # fen issued to each operator on tier 1
# Per operator: (tier, count, opening balances to choose from). Tier-4 wallets near their
# 1,000,000 balance cap and tier-3 near 2,000,000 make incoming payments bite.
WALLET_PLAN = ((1, 4, (5_000_000,)), (2, 8, (2_000_000,)), (3, 8, (300_000, 1_950_000)), (4, 8, (300_000, 980_000)))
WEIGHT = {1: 4, 2: 4, 3: 1, 4: 1}  # how often a wallet of a tier pays or is paid
OVERDRAFT = 10 * 2 * ISSUE  # more than all the money there is


# --------------------------------------------------------------------------- gunicorn


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (scan /proc/*/stat for the parent pid; zombies excluded)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def _cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU time of a process (user + system), with its reaped children's when asked."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


class Gunicorn:
    """``gunicorn bsn.wsgi`` on loopback in its own process group, on the test database."""

    def __init__(self, log_path: Path, env: dict[str, str], workers: int = 3, threads: int = 4):
        self.log_path = log_path
        self.env = env
        self.workers = workers
        self.threads = threads
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gunicorn:
        gunicorn = Path(sys.executable).with_name("gunicorn")
        for _ in range(5):  # a free port can be taken between the probe and the bind: take another
            self.port = free_port()
            argv = [str(gunicorn), "bsn.wsgi", "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers)]
            argv += ["--threads", str(self.threads), "--timeout", "60", "--graceful-timeout", "5"]
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            wait_for(
                lambda: self.proc.poll() is not None or (len(self.worker_pids()) == self.workers and self._answers()),
                timeout=60,
                interval=0.2,
                message="gunicorn to answer with all its workers",
            )
            if self.proc.poll() is None:
                return self
        pytest.fail(f"gunicorn did not start: {self.log_path.read_text()[-3000:]}", pytrace=False)

    def _answers(self) -> bool:
        try:
            requests.get(f"{self.url}/api/v1/dcep/institutions", timeout=2)
        except requests.RequestException:
            return False
        return True

    def worker_pids(self) -> list[int]:
        return _children(self.proc.pid) if self.proc else []

    def kill_worker(self, rng: random.Random) -> int:
        """SIGKILL one worker (the master starts a new one): no graceful anything."""
        victim = rng.choice(self.worker_pids())
        os.kill(victim, signal.SIGKILL)
        return victim

    def cpu_seconds(self) -> float:
        """Master and live workers, plus the workers it reaped (killed ones included)."""
        if not self.proc:
            return 0.0
        return _cpu_seconds(self.proc.pid, children=True) + sum(_cpu_seconds(p) for p in self.worker_pids())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def gunicorn_server(transactional_db, tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bsn.settings_test",
        "DATABASE_URL": _database_url(),
        "PYTHONUNBUFFERED": "1",
    }
    server = Gunicorn(tmp_path / "gunicorn.log", env)
    yield server
    server.stop()


# --------------------------------------------------------------------------- the clients


@dataclass(frozen=True)
class Wallet:
    number: str
    op: str  # "a" or "b": the operator's client
    tier: int


@dataclass
class Req:
    key: str
    op: str  # whose token sends it
    path: str  # "payments" or "payments/batch"
    body: bytes
    items: list[tuple[str, str, int]]  # (from, to, amount) per payment
    expect: frozenset[str] | None = None  # a single payment that must be refused: the allowed codes
    linked: bool = False

    @property
    def batch(self) -> bool:
        return self.path == "payments/batch"


@dataclass(frozen=True)
class Answer:
    status: int
    content: bytes
    replayed: bool


class Deadline(Exception):
    pass


class Bank:
    """Shared state of the client threads: every request and every answer, by key."""

    def __init__(self, base_url: str, tokens: dict[str, str], wallets: list[Wallet], deadline: float):
        self.base = base_url
        self.tokens = tokens
        self.wallets = wallets
        self.deadline = deadline
        self.lock = threading.Lock()
        self.reqs: dict[str, Req] = {}
        self.answers: dict[str, list[Answer]] = defaultdict(list)
        self.disrupted: Counter[str] = Counter()  # key -> sends that got no answer
        self.server_errors: list[tuple[str, int, bytes]] = []
        self.counts: Counter[str] = Counter()
        self.claimed = 0
        self.later: list[str] = []
        self.pairs: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.crashes: list[str] = []
        self.latencies: list[float] = []  # seconds, answered sends
        self.reset_at: list[float] = []  # when a send got a connection error
        self.reset_keys: set[str] = set()  # keys of those sends
        self.by_tier: dict[int, list[Wallet]] = defaultdict(list)
        for w in wallets:
            self.by_tier[w.tier].append(w)
        self.weights = [WEIGHT[w.tier] for w in wallets]

    # ---------------------------------------------------------------- sending
    def send(self, session: requests.Session, req: Req, *, impatient: bool = False) -> Answer:
        """Send until answered, with the same key and body every time (what a bank's client does).

        ``impatient``: the first send gives up after 5 ms, before the answer can come (the
        server goes on and commits): the client never saw the first answer.
        """
        headers = {
            "Authorization": f"Token {self.tokens[req.op]}",
            "Content-Type": "application/json",
            "Idempotency-Key": req.key,
        }
        url = f"{self.base}/api/v1/dcep/{req.path}"
        attempt = 0
        while True:
            if time.monotonic() > self.deadline:
                raise Deadline(f"key {req.key} not answered before the deadline")
            attempt += 1
            sent = time.monotonic()
            read_timeout = 0.005 if impatient and attempt == 1 else 60
            try:
                resp = session.post(url, data=req.body, headers=headers, timeout=(5, read_timeout))
            except requests.RequestException as exc:
                reason = "client timeouts" if isinstance(exc, requests.ReadTimeout) else "connection errors"
                with self.lock:
                    self.disrupted[req.key] += 1
                    self.counts[reason] += 1
                    if reason == "connection errors":
                        self.reset_at.append(time.monotonic())
                        self.reset_keys.add(req.key)
                time.sleep(min(0.02 * attempt, 0.5))
                continue
            if resp.status_code >= 500:  # never stored: a resend runs again; a bug all the same
                with self.lock:
                    self.server_errors.append((req.key, resp.status_code, resp.content[:500]))
                if attempt > 20:
                    raise Deadline(f"key {req.key}: {resp.status_code} 20 times: {resp.content[:300]!r}")
                time.sleep(0.1)
                continue
            answer = Answer(resp.status_code, resp.content, resp.headers.get("Idempotent-Replayed") == "true")
            with self.lock:
                self.answers[req.key].append(answer)
                self.latencies.append(time.monotonic() - sent)
            return answer

    # ---------------------------------------------------------------- making payments
    def claim(self, rng: random.Random) -> int:
        """How many new payments this request may carry (0: the target is reached)."""
        n = rng.randint(5, 25) if rng.random() < 0.02 else 1
        with self.lock:
            n = min(n, PAYMENTS - self.claimed)
            self.claimed += max(n, 0)
        return max(n, 0)

    @staticmethod
    def amount(rng: random.Random, tier: int) -> int:
        """Mostly small; tier-3/4 wallets pay less (their daily caps still bite, later in the run)."""
        roll = rng.random()
        if tier >= 3:
            if roll < 0.85:
                return rng.randint(1, 5_000)
            return rng.randint(5_000, 100_000) if roll < 0.97 else rng.randint(100_000, 250_000)
        if roll < 0.70:
            return rng.randint(1, 20_000)
        return rng.randint(20_000, 150_000) if roll < 0.95 else rng.randint(150_000, 600_000)

    def payer(self, rng: random.Random, op: str | None = None) -> Wallet:
        while True:
            w = rng.choices(self.wallets, weights=self.weights)[0]
            if op is None or w.op == op:
                return w

    def payee(self, rng: random.Random, src: Wallet) -> Wallet:
        while True:
            w = rng.choices(self.wallets, weights=self.weights)[0]
            if w != src:
                return w

    def new_request(self, rng: random.Random, index: int, n: int) -> Req:
        key = f"bank-{index}-{uuid.uuid4().hex}"
        if n > 1 or rng.random() < 0.005:  # a batch (now and then a batch of one)
            op = rng.choice("ab")
            items = []
            for _ in range(n):
                src = self.payer(rng, op)
                items.append((src.number, self.payee(rng, src).number, self.amount(rng, src.tier)))
            linked = rng.random() < 0.3
            payments = [
                {"from_wallet": f, "to_wallet": t, "amount": a, "memo": f"{key}#{i}"}
                for i, (f, t, a) in enumerate(items)
            ]
            body = {"payments": payments, "linked": linked}
            req = Req(key, op, "payments/batch", json.dumps(body).encode(), items, linked=linked)
        else:
            req = self._single(rng, key)
        with self.lock:
            self.reqs[key] = req
        return req

    def _single(self, rng: random.Random, key: str) -> Req:
        roll = rng.random()
        expect = None
        src = self.payer(rng)
        dst = self.payee(rng, src)
        op = src.op
        amount = self.amount(rng, src.tier)
        if roll < 0.03:  # over the single-payment cap
            src = rng.choice(self.by_tier[3] + self.by_tier[4])
            dst, op = self.payee(rng, src), src.op
            amount = caps(src.tier).single + rng.randint(1, 100_000)
            expect = frozenset({"over-single-cap"})
        elif roll < 0.06:  # overdraft: more than all the money there is, from an uncapped wallet
            src = rng.choice(self.by_tier[1])
            dst, op, amount = self.payee(rng, src), src.op, OVERDRAFT
            expect = frozenset({"insufficient-funds"})
        elif roll < 0.08:  # over the payee's balance cap (unless the payer cannot pay it at all)
            src, dst = rng.choice(self.by_tier[1]), rng.choice(self.by_tier[4])
            op, amount = src.op, caps(4).balance + 1
            expect = frozenset({"over-balance-cap", "insufficient-funds"})
        elif roll < 0.09:
            dst = src
            expect = frozenset({"same-wallet"})
        elif roll < 0.10:  # the other operator pays from a wallet it does not operate
            op = "b" if src.op == "a" else "a"
            expect = frozenset({"not-found"})
        body = {"from_wallet": src.number, "to_wallet": dst.number, "amount": amount, "memo": key}
        return Req(key, op, "payments", json.dumps(body).encode(), [(src.number, dst.number, amount)], expect)

    # ---------------------------------------------------------------- one client thread
    def client(self, index: int) -> None:
        rng = random.Random(SEED * 1000 + index)
        session = requests.Session()
        try:
            while not self.stop.is_set():
                try:
                    req, barrier = self.pairs.get_nowait()
                except queue.Empty:
                    pass
                else:  # the second thread of a concurrent duplicate
                    self._together(barrier)
                    self.send(session, req)
                    continue
                if rng.random() < 0.05 and self.later:  # a resend some time later, maybe by another thread
                    with self.lock:
                        key = rng.choice(self.later)
                        self.counts["resends later"] += 1
                    self.send(session, self.reqs[key])
                    continue
                n = self.claim(rng)
                if not n:
                    break
                req = self.new_request(rng, index, n)
                mode = rng.random()
                if mode < 0.03:  # the same request from two threads at the same moment
                    barrier = threading.Barrier(2)
                    self.pairs.put((req, barrier))
                    if self._together(barrier):
                        with self.lock:
                            self.counts["concurrent duplicates"] += 1
                    self.send(session, req)
                    continue
                self.send(session, req, impatient=mode > 0.99)
                if mode < 0.09:
                    with self.lock:
                        self.counts["resends at once"] += 1
                    self.send(session, req)
                elif mode < 0.15:
                    with self.lock:
                        self.later.append(req.key)
        except Deadline as exc:
            with self.lock:
                self.crashes.append(f"client {index}: {exc}")
        except Exception:  # noqa: BLE001 - reported by the test, never swallowed
            with self.lock:
                self.crashes.append(f"client {index}: {traceback.format_exc()}")
        finally:
            session.close()

    @staticmethod
    def _together(barrier: threading.Barrier) -> bool:
        try:
            barrier.wait(timeout=2)
        except threading.BrokenBarrierError:
            return False
        return True


# --------------------------------------------------------------------------- journal reads


def money() -> dict:
    """Σ wallets + vaults + held (hold accounts) and issued − withdrawn, from the journal."""
    balances = dict(Account.objects.values_list("kind").annotate(s=Sum("balance")).values_list("kind", "s"))
    kinds = dict(Transfer.objects.values_list("kind").annotate(s=Sum("amount")).values_list("kind", "s"))
    in_tier2 = sum(balances.get(k, 0) or 0 for k in (Account.Kind.WALLET, Account.Kind.VAULT, Account.Kind.HOLD))
    issued = kinds.get(Transfer.Kind.ISSUANCE, 0)
    withdrawn = kinds.get(Transfer.Kind.WITHDRAWAL, 0) - kinds.get(Transfer.Kind.REVERSAL, 0)
    return {
        "wallets": balances.get(Account.Kind.WALLET, 0) or 0,
        "vaults": balances.get(Account.Kind.VAULT, 0) or 0,
        "held": balances.get(Account.Kind.HOLD, 0) or 0,
        "total": in_tier2,
        "issued_minus_withdrawn": issued - withdrawn,
        "issuance_account": balances.get(Account.Kind.ISSUANCE, 0) or 0,
    }


_BAD_LEGS = """
SELECT t.id FROM dcep_transfer t JOIN dcep_entry e ON e.transfer_id = t.id
WHERE t.kind = 'payment'
GROUP BY t.id, t.amount, t.from_account_id, t.to_account_id
HAVING COUNT(*) <> 2
    OR SUM(CASE WHEN e.account_id = t.from_account_id AND e.amount = -t.amount THEN 1 ELSE 0 END) <> 1
    OR SUM(CASE WHEN e.account_id = t.to_account_id AND e.amount = t.amount THEN 1 ELSE 0 END) <> 1
"""


# --------------------------------------------------------------------------- the test


def _open_wallets(clients, rng: random.Random) -> list[Wallet]:
    wallets = []
    for op in ("a", "b"):
        client = clients[op]
        for tier, count, openings in WALLET_PLAN:
            for i in range(count):
                resp = client.post("wallets", {"holder_name": f"{op}-t{tier}-{i}", "tier": tier, "kind": "personal"})
                assert resp.status_code == 201, resp.content
                number = resp.json()["id"]
                resp = client.post("exchanges", {"wallet": number, "amount": rng.choice(openings)})
                assert resp.status_code == 201, resp.content
                wallets.append(Wallet(number, op, tier))
    return wallets


def test_bank_concurrent_payments_survive_worker_kills(tier1, clients, gunicorn_server, record_property):
    test_started = time.monotonic()
    rng = random.Random(SEED)
    cb = clients["cb"]
    for operator in ("bank-a", "bank-b"):
        resp = cb.post("issuances", {"operator": operator, "amount": ISSUE})
        assert resp.status_code == 201, resp.content
    wallets = _open_wallets(clients, rng)
    assert len(wallets) >= 50
    tokens = {k: token_issue(membership=clients[k].membership, name="bank-load").secret for k in ("a", "b", "cb")}
    opening = dict(Account.objects.filter(kind=Account.Kind.WALLET).values_list("number", "balance"))
    before = money()
    assert before["total"] == before["issued_minus_withdrawn"] == 2 * ISSUE, before

    server = gunicorn_server.start()
    supply_url = f"{server.url}/api/v1/dcep/supply"
    resp = requests.get(supply_url, headers={"Authorization": f"Token {tokens['cb']}"}, timeout=30)
    assert resp.status_code == 200 and resp.json()["ok"], resp.content

    # ---------------------------------------------------------------- the load
    day_before = dt.datetime.now(dt.UTC).date()
    cpu_server, cpu_client = server.cpu_seconds(), time.process_time()
    started = time.monotonic()
    bank = Bank(server.url, tokens, wallets, deadline=started + LOAD_DEADLINE_S)
    threads = [threading.Thread(target=bank.client, args=(i,), name=f"bank-{i}", daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    kills: list[int] = []
    killed_at: list[float] = []
    kill_at = [int(PAYMENTS * share) for share in KILL_AT]
    while any(t.is_alive() for t in threads) and time.monotonic() < bank.deadline + 10:
        if kill_at and bank.claimed >= kill_at[0]:
            kill_at.pop(0)
            kills.append(server.kill_worker(rng))
            killed_at.append(time.monotonic())
        time.sleep(0.02)
    load_s = time.monotonic() - started
    cpu_server, cpu_client = server.cpu_seconds() - cpu_server, time.process_time() - cpu_client
    load_requests = sum(len(a) for a in bank.answers.values())
    latency = sorted(bank.latencies)
    if any(t.is_alive() for t in threads) or any("deadline" in c for c in bank.crashes):
        bank.stop.set()
        pytest.fail(
            f"the load did not finish within {LOAD_DEADLINE_S:.0f}s: {bank.claimed}/{PAYMENTS} payments claimed, "
            f"{len(bank.answers)} keys answered, {bank.counts['connection errors']} connection errors, "
            f"{load_requests / load_s:.0f} requests/s with the machine's load average at {os.getloadavg()[0]:.1f}, "
            f"kills {kills}; {bank.crashes[:3]}",
            pytrace=False,
        )
    assert not bank.crashes, "\n".join(bank.crashes[:5])

    # The master replaced every killed worker.
    wait_for(
        lambda: len(server.worker_pids()) == server.workers and not set(kills) & set(server.worker_pids()),
        timeout=30,
        message="gunicorn to replace the killed workers",
    )

    # After all resends, every key has one outcome: send the ambiguous ones (and a sample) once more.
    sweep = sorted(bank.disrupted) + rng.sample(sorted(bank.reqs), min(300, len(bank.reqs)))
    sweep_started = time.monotonic()
    bank.deadline = sweep_started + 60

    def resend_all(keys):
        try:
            with requests.Session() as session:
                for key in keys:
                    bank.send(session, bank.reqs[key])
        except Exception:  # noqa: BLE001 - reported below
            with bank.lock:
                bank.crashes.append(f"final resends: {traceback.format_exc()}")

    sweepers = [threading.Thread(target=resend_all, args=(sweep[i::8],)) for i in range(8)]
    for t in sweepers:
        t.start()
    for t in sweepers:
        t.join(90)
    assert not any(t.is_alive() for t in sweepers), "the final resends did not finish"
    assert not bank.crashes, "\n".join(bank.crashes[:5])
    bank.counts["resends in the final sweep"] = len(sweep)
    checks_started = time.monotonic()
    day_after = dt.datetime.now(dt.UTC).date()

    # ---------------------------------------------------------------- what the clients saw
    problems: list[str] = []
    acknowledged: dict[str, tuple[str, str, int, str]] = {}  # transfer id -> (from, to, amount, memo)
    refused: Counter[str] = Counter()
    refused_in_batches: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    replayed_after_loss = 0
    replayed_after_reset = 0  # of those: the first answer was lost to a connection error (a kill)
    acked = 0  # 201 outcomes: single payments and batch items
    for key, req in bank.reqs.items():
        answers = bank.answers.get(key)
        if not answers:
            problems.append(f"{key}: never answered")
            continue
        first = answers[0]
        for other in answers[1:]:
            if (other.status, other.content) != (first.status, first.content):
                problems.append(f"{key}: resend answered {other.status} {other.content[:200]!r}, first {first.status}")
        originals = sum(1 for a in answers if not a.replayed)
        if originals > 1:
            problems.append(f"{key}: {originals} answers without Idempotent-Replayed (the work ran twice?)")
        if originals == 0:
            if not bank.disrupted[key]:
                problems.append(f"{key}: only replays, yet the first send was answered")
            elif first.status == 201:
                replayed_after_loss += 1
                replayed_after_reset += key in bank.reset_keys
        body = json.loads(first.content)
        if not req.batch:
            (src, dst, amount) = req.items[0]
            if first.status == 201:
                outcomes["201"] += 1
                if req.expect:
                    problems.append(f"{key}: must be refused ({sorted(req.expect)}), was acknowledged")
                if (body["kind"], body["from_wallet"], body["to_wallet"], body["amount"], body["memo"]) != (
                    "payment", src, dst, amount, key,
                ):  # fmt: skip
                    problems.append(f"{key}: acknowledged {body}, asked {req.items[0]}")
                acknowledged[body["id"]] = (src, dst, amount, key)
                acked += 1
            else:
                outcomes[str(first.status)] += 1
                refused[body.get("code")] += 1
                if req.expect and body.get("code") not in req.expect:
                    problems.append(f"{key}: refused {body.get('code')}, expected one of {sorted(req.expect)}")
            continue
        if first.status == 201:
            outcomes["batch 201"] += 1
            if body["count"] != len(req.items) or len(body["results"]) != len(req.items):
                problems.append(f"{key}: batch of {len(req.items)} answered with {body['count']} results")
            if req.linked and body["succeeded"] != len(req.items):
                problems.append(f"{key}: linked batch applied with {body['succeeded']}/{len(req.items)} payments")
            for result, (src, dst, amount) in zip(body["results"], req.items, strict=False):
                memo = f"{key}#{result['index']}"
                if result["status"] == 201:
                    t = result["transfer"]
                    if (t["from_wallet"], t["to_wallet"], t["amount"], t["memo"]) != (src, dst, amount, memo):
                        problems.append(f"{key}: batch item {result['index']} acknowledged {t}")
                    acknowledged[t["id"]] = (src, dst, amount, memo)
                    acked += 1
                else:
                    refused_in_batches[result["code"]] += 1
        elif first.status == 409 and body.get("code") == "linked-batch-failed" and req.linked:
            outcomes["linked batch 409"] += 1
            refused_in_batches["linked-batch-failed"] += len(req.items)
        else:
            problems.append(f"{key}: batch answered {first.status} {first.content[:300]!r}")

    attempted = sum(len(r.items) for r in bank.reqs.values())
    sends = sum(len(a) for a in bank.answers.values())
    resends = sends - len(bank.answers)
    assert attempted >= PAYMENTS

    # ---------------------------------------------------------------- the journal
    journal = {
        str(tid): (f, t, amount, memo)
        for tid, f, t, amount, memo in Transfer.objects.filter(kind=Transfer.Kind.PAYMENT).values_list(
            "id", "from_account__number", "to_account__number", "amount", "memo"
        )
    }
    if not len(journal) == len(acknowledged) == acked:
        problems.append(f"{len(journal)} payments in the journal, {acked} acknowledged, {len(acknowledged)} ids")
    missing = set(acknowledged) - set(journal)
    unacknowledged = set(journal) - set(acknowledged)
    differ = [tid for tid in set(acknowledged) & set(journal) if acknowledged[tid] != journal[tid]]
    if missing:
        problems.append(f"{len(missing)} acknowledged payments not in the journal, e.g. {sorted(missing)[:3]}")
    if unacknowledged:
        problems.append(
            f"{len(unacknowledged)} journal payments never acknowledged, e.g. "
            f"{[journal[t] for t in sorted(unacknowledged)[:3]]}"
        )
    if differ:
        problems.append(f"{len(differ)} payments differ from their acknowledgement, e.g. {journal[differ[0]]}")
    twice = list(
        Transfer.objects.filter(kind=Transfer.Kind.PAYMENT).values("memo").annotate(n=Count("id")).filter(n__gt=1)
    )
    if twice:
        problems.append(f"{len(twice)} keys applied more than once, e.g. {twice[:3]}")
    with connection.cursor() as cursor:
        cursor.execute(_BAD_LEGS)
        bad_legs = cursor.fetchall()
    if bad_legs:
        problems.append(f"{len(bad_legs)} payments whose legs are not -amount/+amount on their wallets")

    # Every key has exactly one stored outcome, and it is what the client saw.
    tenants = [clients["a"].tenant.pk, clients["b"].tenant.pk]
    records = {
        key: (status, state, bytes(content))
        for key, status, state, content in IdempotencyRecord.objects.filter(
            tenant_id__in=tenants, key__startswith="bank-"
        ).values_list("key", "response_status", "status", "response_body")
    }
    if set(records) != set(bank.reqs):
        problems.append(f"{len(records)} stored keys for {len(bank.reqs)} keys sent")
    for key, (status, state, content) in records.items():
        first = bank.answers[key][0] if bank.answers.get(key) else None
        if (
            state != IdempotencyRecord.Status.DONE
            or first is None
            or (status, content) != (first.status, first.content)
        ):
            problems.append(f"{key}: stored {state} {status}, the client saw {first and first.status}")

    # Every wallet: opening + acknowledged in - acknowledged out; within its caps.
    expected = dict(opening)
    out_today: Counter[str] = Counter()
    cross = Counter()
    op_of = {w.number: w.op for w in wallets}
    tier_of = {w.number: w.tier for w in wallets}
    for src, dst, amount, _memo in acknowledged.values():
        expected[src] -= amount
        expected[dst] += amount
        out_today[src] += amount
        if op_of[src] != op_of[dst]:
            cross[op_of[src]] += amount
        single = caps(tier_of[src]).single
        if single is not None and amount > single:
            problems.append(f"{amount} fen acknowledged from a tier-{tier_of[src]} wallet (single cap {single})")
    final = {
        number: (balance, held)
        for number, balance, held in Account.objects.filter(kind=Account.Kind.WALLET).values_list(
            "number", "balance", "held"
        )
    }
    for number, want in expected.items():
        balance, held = final[number]
        if (balance, held) != (want, 0):
            problems.append(f"wallet {number}: balance {balance} held {held}, the acknowledged payments say {want}")
        limits = caps(tier_of[number])
        if balance < 0 or (limits.balance is not None and balance > limits.balance):
            problems.append(f"wallet {number} (tier {tier_of[number]}) holds {balance} fen")
        if day_before == day_after and limits.daily is not None and out_today[number] > limits.daily:
            problems.append(f"wallet {number} (tier {tier_of[number]}) sent {out_today[number]} fen today")
    for op in ("a", "b"):  # what the operator's API shows is the same
        resp = requests.get(
            f"{server.url}/api/v1/dcep/wallets",
            params={"page_size": 200},
            headers={"Authorization": f"Token {tokens[op]}"},
            timeout=30,
        )
        shown = {w["id"]: (w["balance"], w["available"], w["held"]) for w in resp.json()["results"]}
        mine = {w.number: (expected[w.number], expected[w.number], 0) for w in wallets if w.op == op}
        if shown != mine:
            problems.append(
                f"GET wallets of bank-{op} differs from the model: {set(shown.items()) ^ set(mine.items())}"
            )
    obligations = dict(
        Transfer.objects.filter(kind=Transfer.Kind.PAYMENT, obligation__gt=0)
        .values_list("obligor__tenant__slug")
        .annotate(s=Sum("obligation"))
        .values_list("obligor__tenant__slug", "s")
    )
    if obligations != {f"bank-{op}": amount for op, amount in cross.items() if amount}:
        problems.append(f"interbank obligations {obligations}, cross-operator payments acknowledged {dict(cross)}")

    # Money, to the fen: journal, chain, deep checks.
    after = money()
    if not (after["total"] == after["issued_minus_withdrawn"] == before["total"] == -after["issuance_account"]):
        problems.append(f"money not conserved: before {before}, after {after}")
    negative = Account.objects.exclude(kind=Account.Kind.ISSUANCE).filter(balance__lt=0).count()
    if negative:
        problems.append(f"{negative} accounts below zero")
    supply = requests.get(supply_url, headers={"Authorization": f"Token {tokens['cb']}"}, timeout=30)
    if supply.status_code != 200 or not supply.json()["ok"]:
        problems.append(f"GET supply: {supply.status_code} {supply.content[:1000]!r}")
    problems += [f"deep check failed: {c}" for c in deep_checks() if not c["ok"]]
    if bank.server_errors:
        problems.append(f"{len(bank.server_errors)} answers 5xx, e.g. {bank.server_errors[:2]}")

    # ---------------------------------------------------------------- the figures
    reset_by_kills = sum(1 for t in bank.reset_at if any(0 <= t - k < 10 for k in killed_at))
    ops = Institution.objects.filter(kind=Institution.Kind.OPERATOR_BANK).count()
    figures = {
        "payments attempted": attempted,
        "acknowledged (201 transfers)": len(acknowledged),
        "single payments": {**outcomes},
        "refused by code": dict(refused.most_common()),
        "batch items refused by code": dict(refused_in_batches.most_common()),
        "batches": sum(1 for r in bank.reqs.values() if r.batch),
        "keys": len(bank.reqs),
        "requests answered": sends,
        "resends": resends,
        "resend kinds": {k: v for k, v in bank.counts.items() if k.startswith(("resends", "concurrent"))},
        "connection errors (all / within 10 s of a kill)": [bank.counts["connection errors"], reset_by_kills],
        "client timeouts (impatient first sends)": bank.counts["client timeouts"],
        "acknowledged only by replay after a lost answer (all / lost to a kill)": [
            replayed_after_loss,
            replayed_after_reset,
        ],
        "kills": len(kills),
        "wallets": len(wallets),
        "operators": ops,
        "clients": CLIENTS,
        "load wall time s": round(load_s, 1),
        "setup s (after the tier-1 node)": round(started - test_started, 1),
        "final sweep s": round(checks_started - sweep_started, 1),
        "checks s": round(time.monotonic() - checks_started, 1),
        "payments/s": round(attempted / load_s, 1),
        "requests/s": round(load_requests / load_s, 1),
        "latency ms p50/p95/max": [round(1000 * latency[int(q * (len(latency) - 1))]) for q in (0.5, 0.95, 1)],
        "CPU ms per request: gunicorn, clients": [
            round(1000 * cpu / load_requests, 1) for cpu in (cpu_server, cpu_client)
        ],
        "load average (1 min, machine)": round(os.getloadavg()[0], 1),
        "money before": before["total"],
        "money after": after["total"],
    }
    for name, value in figures.items():
        record_property(name, value)
    print("\nBANK CONCURRENCY " + json.dumps(figures, ensure_ascii=False))
    print(
        f"BANK SUMMARY: {attempted} payments attempted, {len(acknowledged)} acknowledged, {resends} resends, "
        f"{len(kills)} worker kills, {load_s:.1f}s, {attempted / load_s:.0f} payments/s, "
        f"money {before['total']} -> {after['total']} fen"
    )

    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])
    assert len(kills) == len(KILL_AT), kills
    assert reset_by_kills >= 1, "the kills hit no request in flight"
    assert replayed_after_loss >= 1, "no payment was acknowledged by a replay after its first answer was lost"
    assert bank.counts["concurrent duplicates"] >= 1 and bank.counts["resends later"] >= 1
    bite = ("over-single-cap", "insufficient-funds", "over-balance-cap", "same-wallet")
    bite += ("over-daily-cap",) if PAYMENTS >= 10_000 else ()  # daily caps bite later in the run
    for code in bite:
        assert refused[code] + refused_in_batches[code] > 0, f"no payment was refused {code}"
    assert len(acknowledged) > attempted // 3

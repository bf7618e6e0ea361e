"""Programmable payments end to end (issue 10): a letter of credit on a real trade-finance
node pays the seller, or gives the buyer its money back, with nobody calling the DCEP API.

The buyer (an enterprise with a corporate wallet at bank A) creates a ``trade_finance``
app through the API (real Celery worker, real ledger node on the process driver), places
two holds bound to the app's events, and its issuing bank and the seller sign the letters
of credit through the gateway with ``bsn.client``. The worker's beat runs the event reader
(``apps.events``), which reads the committed blocks and hands their events to
``apps.dcep.programmable``: LC-1 accepted → the seller is paid; LC-2 rejected → the buyer's
hold is released. Then the same events again, three ways: the reader's cursor moved back
(redelivery), ``pump_app`` from a second process, and events built by hand from the
gateway's receipts — and nothing moves twice. A second test SIGKILLs the worker while its
consumer is inside a capture (waiting on the hold's row, which the test holds): nothing is
written, and the next worker pays the seller once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
import pytest

from apps.dcep.models import Account, Hold, HoldRelease
from apps.dcep.programmable import interested_apps, on_chain_events
from apps.dcep.selectors import deep_checks
from apps.events.feed import ChainEvent
from apps.events.models import EventCursor
from apps.events.services import pump_app
from bsn.client import Client, generate_key
from tests.dcep.conftest import clients, enterprise, home_region, institutions, tier1  # noqa: F401 - fixtures
from tests.dcep.helpers import created, funded_wallet, issue, open_wallet
from tests.integration.conftest import _database_url, operation_done, wait_for

pytestmark = pytest.mark.integration


def lc_args(lc_id: str, amount: int) -> dict:
    return {
        "lc_id": lc_id, "applicant": "buyer", "beneficiary": "seller", "amount": amount, "currency": "CNY",
        "documents_required": ["commercial invoice", "bill of lading"],
    }  # fmt: skip


def events_of(client: Client, app_id: str, receipts: list[dict]) -> list[ChainEvent]:
    """ChainEvents built from the gateway's receipts (and each block's timestamp), as the reader would."""
    out = []
    for r in receipts:
        block_time_ms = client.block(r["height"])["header"]["timestamp"]
        tx = client.tx(r["tx_id"])["tx"]["tx"]
        for seq, ev in enumerate(r["events"]):
            fields = {"contract": tx["contract"], "function": tx["function"], "signer": tx["signer"]}
            out.append(
                ChainEvent(
                    app_id=app_id,
                    height=r["height"],
                    index=r["index"],
                    seq=seq,
                    tx_id=r["tx_id"],
                    name=ev["name"],
                    payload=ev["payload"],
                    block_time_ms=block_time_ms,
                    **fields,
                )
            )
    return out


WORKER_ENV = {"BSN_EVENTS_PUMP_INTERVAL": "0.5"}  # beat runs the reader every half second


@dataclass
class Letters:
    """A buyer with a funded corporate wallet, a seller's wallet, and the buyer's trade-finance
    app on a real node with its issuing bank and the seller registered as app users."""

    dcep: dict
    region: object
    buyer: str
    seller: str
    app_id: str
    bank: Client
    beneficiary: Client
    worker: object  # tests.integration.conftest.Worker, with beat

    def place(self, lc_id: str, amount: int) -> str:
        """A hold bound to ``lc_id``: accepted captures, rejected voids."""
        release_on = {
            "app": self.app_id,
            # Only the issuing bank's word counts (any app user could emit an event of that name).
            "capture": {"event": "accepted", "match": {"lc_id": lc_id}, "signer": "bank"},
            "void": {"event": "rejected", "match": {"lc_id": lc_id}, "signer": "bank"},
        }
        body = {"from_wallet": self.buyer, "to_wallet": self.seller, "amount": amount, "expires_in_s": 3600}
        return created(self.dcep["corp"].post("holds", {**body, "release_on": release_on}))["id"]


def letters(live_server, make_regions, worker_factory, dcep) -> Letters:
    corp, bank_a, bank_b = dcep["corp"], dcep["a"], dcep["b"]
    (region,) = make_regions("process", count=1)
    worker = worker_factory([region], beat=True, env=WORKER_ENV)  # nothing else is asked to pump
    # Money: bank A issued to, the buyer's corporate wallet funded; the seller's wallet at bank B.
    issue(dcep["cb"], "bank-a", 5_000_000)
    buyer = funded_wallet(bank_a, 1_000_000, kind="corporate", holder_tenant=corp.tenant.slug, name="Acme treasury")
    seller = open_wallet(bank_b, name="Seller Ltd")
    # The buyer's trade-finance app, with a real node.
    resp = corp.api.post(
        "/api/v1/apps", {"name": "letters", "regions": [region.code], "contract_template": "trade_finance"},
        format="json",
    )  # fmt: skip
    assert resp.status_code == 202, resp.content
    app_id = resp.json()["app"]
    assert operation_done(corp.api, resp["Location"])["status"] == "succeeded"
    token = corp.api._credentials["HTTP_AUTHORIZATION"].split()[1]
    bank = Client(live_server.url, token, app_id, "bank", generate_key()[0])
    beneficiary = Client(live_server.url, token, app_id, "seller", generate_key()[0])
    bank.register()
    beneficiary.register()
    return Letters(dcep, region, buyer, seller, app_id, bank, beneficiary, worker)


@pytest.mark.usefixtures("tier1")
def test_letter_of_credit_accepted_pays_the_seller_rejected_releases_the_buyer(
    live_server, make_regions, worker_factory, request
):
    dcep = request.getfixturevalue("clients")
    corp, bank_b = dcep["corp"], dcep["b"]
    lc = letters(live_server, make_regions, worker_factory, dcep)
    buyer, seller, app_id, bank, beneficiary, place = (
        lc.buyer, lc.seller, lc.app_id, lc.bank, lc.beneficiary, lc.place,
    )  # fmt: skip

    hold_1, hold_2 = place("LC-1", 600_000), place("LC-2", 250_000)
    hold_3 = place("LC-3", 100_000)  # never issued: stays pending, so the reader keeps reading the app
    assert [str(a) for a in interested_apps()] == [app_id]

    receipts = [
        bank.submit("trade_finance", "issue", lc_args("LC-1", 600_000)),
        bank.submit("trade_finance", "issue", lc_args("LC-2", 250_000)),
        beneficiary.submit("trade_finance", "present", {"lc_id": "LC-1", "documents": ["invoice", "B/L"]}),
        beneficiary.submit("trade_finance", "present", {"lc_id": "LC-2", "documents": ["invoice"]}),
        bank.submit("trade_finance", "accept", {"lc_id": "LC-1"}),
        bank.submit("trade_finance", "reject", {"lc_id": "LC-2", "reason": "bill of lading missing"}),
    ]
    decided = time.monotonic()  # the reject's block is committed: the reader's turn
    assert [r["status"] for r in receipts] == ["committed"] * 6, receipts
    assert [e["name"] for r in receipts for e in r["events"]] == [
        "issued", "issued", "presented", "presented", "accepted", "rejected",
    ]  # fmt: skip

    def settled():
        statuses = dict(Hold.objects.filter(pk__in=[hold_1, hold_2]).values_list("pk", "status"))
        return statuses if set(statuses.values()) == {"captured", "voided"} else None

    wait_for(settled, timeout=60, message="the reader to release both holds", interval=0.05)
    print(f"holds released {time.monotonic() - decided:.2f} s after the last block (beat every 0.5 s)")
    one, two = created(corp.get(f"holds/{hold_1}"), 200), created(corp.get(f"holds/{hold_2}"), 200)
    assert (one["status"], one["captured"], one["released_by"]["tx_id"]) == ("captured", 600_000, receipts[4]["tx_id"])
    assert (two["status"], two["released_by"]["tx_id"]) == ("voided", receipts[5]["tx_id"])
    assert created(bank_b.get(f"wallets/{seller}"), 200)["available"] == 600_000  # the seller is paid
    wallet = created(corp.get(f"wallets/{buyer}"), 200)
    assert (wallet["available"], wallet["held"]) == (300_000, 100_000)  # LC-2's 250,000 came back; LC-3 held

    # The same events again: the reader's cursor moved back (a redelivery, by the beat's worker
    # or this process, whichever takes the app's lock), and events built from the gateway's
    # receipts (the reader's keys: same height, index and event position) twice.
    first = list(HoldRelease.objects.order_by("id").values_list("hold_id", "event_key", "outcome"))
    assert [(str(h), o) for h, _, o in first] == [(hold_1, "captured"), (hold_2, "voided")]
    head = receipts[-1]["height"]
    cursor = EventCursor.objects.filter(app_id=app_id, consumer="dcep-release")
    assert cursor.get().height >= head
    cursor.update(height=0)
    pump_app(app_id)
    wait_for(lambda: cursor.get().height >= head, timeout=30, message="the reader to read the chain again")
    on_chain_events(app_id, events_of(bank, app_id, receipts))
    on_chain_events(app_id, events_of(bank, app_id, receipts))
    assert list(HoldRelease.objects.order_by("id").values_list("hold_id", "event_key", "outcome")) == first
    assert Account.objects.get(number=seller).balance == 600_000
    assert Account.objects.get(number=buyer).balance == 300_000
    assert created(corp.post(f"holds/{hold_3}/void"), 200)["status"] == "voided"
    assert interested_apps() == []
    checks = deep_checks()
    assert all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]
    supply = created(dcep["cb"].get("supply"), 200)
    assert supply["ok"], supply["checks"]


@pytest.mark.usefixtures("tier1")
def test_a_worker_killed_while_capturing_pays_once(live_server, make_regions, worker_factory, request):
    """The worker's consumer is stopped inside the capture (this test holds the hold's row lock),
    the worker is SIGKILLed there, a new worker starts: the seller is paid once."""
    dcep = request.getfixturevalue("clients")
    lc = letters(live_server, make_regions, worker_factory, dcep)
    hold = lc.place("LC-9", 450_000)
    lc.bank.submit("trade_finance", "issue", lc_args("LC-9", 450_000))
    lc.beneficiary.submit("trade_finance", "present", {"lc_id": "LC-9", "documents": ["invoice"]})

    with psycopg.connect(_database_url()) as blocker:
        blocker.execute("SELECT id FROM dcep_hold WHERE id = %s FOR UPDATE", [hold])  # held until rollback
        accept = lc.bank.submit("trade_finance", "accept", {"lc_id": "LC-9"})

        def consumer_waiting() -> int:  # a backend of this database waits for a lock: the worker's
            (n,) = blocker.execute(
                "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE NOT l.granted AND a.datname = current_database() AND a.pid <> pg_backend_pid()"
            ).fetchone()
            return n

        wait_for(consumer_waiting, timeout=30, message="the worker's consumer to wait on the hold")
        lc.worker.kill()
        blocker.rollback()
    assert not HoldRelease.objects.exists()
    assert Hold.objects.get(pk=hold).status == "pending"

    worker_factory([lc.region], beat=True, env=WORKER_ENV)
    wait_for(
        lambda: Hold.objects.get(pk=hold).status == "captured", timeout=60, message="a new worker to capture the hold"
    )
    # The killed worker's session can never commit (its client is gone); the new worker moved the
    # cursor past the accept in the capture's transaction, and the app no longer interests the consumer.
    cursor = EventCursor.objects.get(app_id=lc.app_id, consumer="dcep-release")
    assert cursor.height >= accept["height"] and interested_apps() == []
    assert list(HoldRelease.objects.values_list("event_key", "outcome")) == [
        (f"{lc.app_id}:{accept['height']}:{accept['index']}:0", "captured")
    ]
    assert Account.objects.get(number=lc.seller).balance == 450_000
    assert Account.objects.get(number=lc.buyer).balance == 550_000
    checks = deep_checks()
    assert all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]

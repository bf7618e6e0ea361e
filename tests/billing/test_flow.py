"""A month of metered usage billed and paid in digital currency, with time injected (no waiting).

The DCEP side is real: a tier-1 node (python -m bsn.ledger), issuance, wallets opened by
operator banks through the API; the invoice is paid through ``payment_create``. Afterwards
every DCEP invariant holds (tests/dcep's helpers: ``supply_report`` against the chain,
``deep_checks`` over the journal).
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditEvent
from apps.billing import tasks
from apps.billing.models import Invoice, InvoiceLine, Suspension
from apps.chainapps.models import ChainApp, Operation
from apps.dcep.models import Account, Transfer
from apps.dcep.selectors import deep_checks, supply_report
from apps.dcep.settlement import settlement_run, settlement_start
from apps.dcep.tier1 import chain_supply
from apps.metering.models import UsageHour
from tests.api.conftest import assert_problem, finish_open_operations
from tests.billing.conftest import CLOSE_AT, OCT, PRICE_CHANGE, T, fund, iso
from tests.billing.factories import UsageHourFactory, month_of_usage

pytestmark = pytest.mark.django_db

# Expected, worked out by hand from the prices in conftest (docs/billing.md, "Rounding"):
# ledger @ cn-beijing, 744 hours of 1 node, 125 tx and 3 GB an hour; the price changes after 360 h.
LEDGER = [
    ("node_hours", "360", 30, 10_800, 3_240),
    ("transactions", "45", 50, 2_250, 675),
    ("storage", "1.451612903", 100, 145, 44),  # 1080/744 GB-months x 100 = 145.16; share 43.5 -> 44
    ("node_hours", "384", 40, 15_360, 4_608),
    ("transactions", "48", 60, 2_880, 864),
    ("storage", "1.548387097", 100, 155, 47),  # 154.84 -> 155; share 46.5 -> 47
]
# notary @ cn-shanghai, 10 half-node hours with 335 tx and 1 GB each.
NOTARY = [
    ("node_hours", "5", 20, 100, 16),  # share 15.5 -> 16
    ("transactions", "3.35", 10, 34, 5),  # 33.5 -> 34 (half up); share 5.27 -> 5
    ("storage", "0.01344086", 3, 0, 0),  # 10/744 GB-months x 3 fen = 0.04
]
TOTAL = sum(line[3] for line in LEDGER + NOTARY)
SHARE = sum(line[4] for line in LEDGER + NOTARY)


def metered(corp, home_region, shanghai):
    ledger, notary = corp["apps"]["ledger"], corp["apps"]["notary"]
    month_of_usage(ledger, home_region, OCT, tx_committed=125, storage_bytes=3_000_000_000)
    for h in range(10):
        UsageHourFactory(
            app=notary,
            region=shanghai,
            hour=T + dt.timedelta(days=2, hours=h),
            node_seconds=1800,
            tx_committed=335,
            storage_bytes=10**9,
        )
    # The hours either side of the month are not October's.
    UsageHourFactory(app=ledger, region=home_region, hour=T - dt.timedelta(hours=1), tx_committed=10**6)
    UsageHourFactory(app=ledger, region=home_region, hour=T + dt.timedelta(days=31), tx_committed=10**6)


def invariants_hold() -> None:
    report = supply_report(chain_supply())
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]
    assert all(check["ok"] for check in deep_checks()), deep_checks()


def balance(number: str) -> int:
    return Account.objects.get(number=number).balance


def test_a_month_billed_and_paid(bank, prices, corp, home_region, shanghai):
    metered(corp, home_region, shanghai)
    fund(bank, 5_000_000)
    assert tasks.month_close(now=iso(CLOSE_AT - dt.timedelta(hours=2))) is None  # the month's last counters may lag
    report = tasks.month_close(now=iso(CLOSE_AT))
    assert report == {"month": "2026-10", "created": ["BSN-202610-acme-corp"], "existing": [], "refused": {}}
    assert tasks.month_close(now=iso(CLOSE_AT + dt.timedelta(hours=1)))["existing"] == ["BSN-202610-acme-corp"]
    invoice = Invoice.objects.get()
    assert (invoice.total_fen, invoice.operator_share_fen, invoice.status) == (TOTAL, SHARE, "issued")
    assert invoice.due_at == CLOSE_AT + dt.timedelta(days=15)

    lines = list(InvoiceLine.objects.filter(invoice=invoice).order_by("app_name", "period_start", "id"))
    got = [
        (ln.app_name, ln.kind, f"{ln.quantity.normalize():f}", ln.unit_price_fen, ln.amount_fen, ln.operator_share_fen)
        for ln in lines
    ]
    want = [("ledger", k, q, p, a, s) for k, q, p, a, s in LEDGER] + [
        ("notary", k, q, p, a, s) for k, q, p, a, s in NOTARY
    ]
    assert got == want
    assert lines[0].period_end == lines[3].period_start == PRICE_CHANGE
    assert {ln.region_operator for ln in lines} == {"China Mobile", "China Unicom"}

    # The tenant's admins read it (list, detail, printable page); what they see is what was billed.
    admin = corp["admin"]
    listed = admin.get("/api/v1/tenant/invoices").json()
    assert listed["count"] == 1 and listed["results"][0]["total_fen"] == TOTAL
    detail = admin.get(f"/api/v1/tenant/invoices/{invoice.pk}").json()
    assert [(ln["kind"], ln["amount_fen"]) for ln in detail["lines"]] == [(w[1], w[4]) for w in want]
    assert "operator_share_fen" not in detail["lines"][0]  # the platform's business, not the tenant's
    page = admin.get(f"/api/v1/tenant/invoices/{invoice.pk}/html")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    text = page.content.decode()
    assert "BSN-202610-acme-corp" in text and "317.24" in text and "384" in text
    assert not re.search(r"(src|href)=\"(https?:)?//", text), "the printable page loads nothing from elsewhere"

    # Not due yet: nothing moves. On the due date it is paid, once.
    before_corp, before_rev = balance(bank["corporate"]), balance(bank["revenue"])
    assert tasks.payments_due(now=iso(invoice.due_at - dt.timedelta(seconds=1))) == {}
    assert Invoice.objects.get().status == "issued"
    assert tasks.payments_due(now=iso(invoice.due_at)) == {"paid": 1}
    assert tasks.payments_due(now=iso(invoice.due_at + dt.timedelta(days=1))) == {}
    assert tasks.invoice_pay(str(invoice.pk), now=iso(invoice.due_at), force=True) == "paid"
    invoice.refresh_from_db()
    assert invoice.status == "paid" and invoice.paid_at == invoice.due_at
    assert (balance(bank["corporate"]), balance(bank["revenue"])) == (before_corp - TOTAL, before_rev + TOTAL)
    paid = Transfer.objects.filter(kind="payment", memo__contains=invoice.payment_key)
    assert [(str(t.pk), t.amount) for t in paid] == [(str(invoice.transfer_id), TOTAL)]
    assert invoice.payer_wallet == bank["corporate"]
    actions = list(
        AuditEvent.objects.filter(object_id=str(invoice.pk)).order_by("sequence").values_list("action", flat=True)
    )
    assert actions == ["billing.invoice.issue", "billing.invoice.paid"]
    invariants_hold()
    # The payment crosses operators (bank-b's customer pays bank-a's wallet): it settles like any other.
    batch, _ = settlement_start()
    batch = settlement_run(batch.pk)
    assert batch.status == "anchored" and batch.positions == {"bank-a": TOTAL, "bank-b": -TOTAL}
    invariants_hold()

    # Issued means fixed: usage metered late, or new prices, do not change it.
    UsageHourFactory(app=corp["apps"]["idle"], region=home_region, hour=T + dt.timedelta(days=3))
    assert tasks.month_close(now=iso(CLOSE_AT + dt.timedelta(days=2)))["existing"] == ["BSN-202610-acme-corp"]
    assert Invoice.objects.get().total_fen == TOTAL and InvoiceLine.objects.count() == len(want)


def test_an_issued_invoice_never_changes_in_the_database(bank, prices, corp, home_region, shanghai):
    metered(corp, home_region, shanghai)
    tasks.month_close(now=iso(CLOSE_AT))
    invoice = Invoice.objects.get()
    for statement in (
        "UPDATE billing_invoice SET total_fen = 1",
        "UPDATE billing_invoiceline SET amount_fen = 0",
        "DELETE FROM billing_invoiceline",
        "DELETE FROM billing_invoice",
    ):
        with pytest.raises(DatabaseError, match=r"immutable|never"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(statement)
    assert Invoice.objects.get(pk=invoice.pk).total_fen == TOTAL


def test_unpaid_is_retried_daily_then_suspended_after_grace_and_resumed_on_payment(
    bank, prices, corp, home_region, shanghai
):
    metered(corp, home_region, shanghai)
    apps = corp["apps"]
    owner_client = corp["admin"]
    # The tenant stopped "idle" itself: billing neither stops nor starts it.
    from apps.chainapps.services import chainapp_stop

    chainapp_stop(app=apps["idle"], actor=corp["owner"].user)
    finish_open_operations(apps["idle"].pk)
    fund(bank, TOTAL - 1)  # one fen short
    tasks.month_close(now=iso(CLOSE_AT))
    invoice = Invoice.objects.get()
    due = invoice.due_at
    money_before = (balance(bank["corporate"]), balance(bank["revenue"]), Transfer.objects.count())

    assert tasks.payments_due(now=iso(due)) == {"insufficient-funds": 1}
    invoice.refresh_from_db()
    assert (invoice.status, invoice.attempts, invoice.next_attempt_at) == ("issued", 1, due + dt.timedelta(hours=24))
    assert tasks.payments_due(now=iso(due + dt.timedelta(hours=23))) == {}  # daily, not hourly
    assert (balance(bank["corporate"]), balance(bank["revenue"]), Transfer.objects.count()) == money_before

    # Frozen wallet: refused with its own reason, retried the next day.
    wallet = bank["corporate"]
    assert bank["b"].patch(f"wallets/{wallet}", {"status": "frozen"}).status_code == 200
    assert tasks.payments_due(now=iso(due + dt.timedelta(days=1))) == {"wallet-frozen": 1}
    assert bank["b"].patch(f"wallets/{wallet}", {"status": "active"}).status_code == 200

    # Within the grace period (7 days) nothing is suspended.
    assert tasks.suspensions_enforce(now=iso(due + dt.timedelta(days=6)))["suspended"] == []
    assert ChainApp.objects.get(pk=apps["ledger"].pk).desired_state == "running"

    after_grace = due + dt.timedelta(days=7, hours=1)
    report = tasks.suspensions_enforce(now=iso(after_grace))
    assert report["suspended"] == ["acme-corp"] and report["stopped"] == 2
    again = tasks.suspensions_enforce(now=iso(after_grace + dt.timedelta(hours=1)))
    assert again == {"suspended": [], "stopped": 0, "lifted": []}  # idempotent
    states = dict(ChainApp.objects.filter(tenant=corp["tenant"]).values_list("name", "desired_state"))
    assert states == {"ledger": "stopped", "notary": "stopped", "idle": "stopped"}
    stops = Operation.objects.filter(app__tenant=corp["tenant"], kind="stop")
    assert stops.count() == 3  # the tenant's own for idle, and billing's two
    shown = owner_client.get(f"/api/v1/apps/{apps['ledger'].pk}").json()
    assert shown["suspended"]["reason"].startswith("suspended for non-payment: invoice BSN-202610-acme-corp")
    assert owner_client.get(f"/api/v1/apps/{apps['idle'].pk}").json()["suspended"] is None
    audited = set(AuditEvent.objects.filter(tenant=corp["tenant"]).values_list("action", flat=True))
    assert {"billing.tenant.suspend", "billing.app.suspend", "app.stop"} <= audited
    assert UsageHour.objects.filter(app=apps["ledger"]).exists()  # stopped, data kept

    # While suspended the tenant cannot start what billing stopped: 409 naming why, nothing changes.
    finish_open_operations(apps["ledger"].pk)
    finish_open_operations(apps["idle"].pk)  # notary's stop stays open: its resume must wait
    before = Operation.objects.filter(app__tenant=corp["tenant"]).count()
    body = assert_problem(owner_client.post(f"/api/v1/apps/{apps['ledger'].pk}/start"), 409, "app-suspended")
    assert "unpaid invoice" in body["detail"] and "BSN-202610-acme-corp" in body["detail"]
    assert ChainApp.objects.get(pk=apps["ledger"].pk).desired_state == "stopped"
    assert Operation.objects.filter(app__tenant=corp["tenant"]).count() == before

    # The tenant pays in (the wallet is topped up); the next daily attempt pays, and the apps
    # billing stopped come back once their stop operations are finished (notary's: still open).
    fund(bank, 1)
    next_try = after_grace + dt.timedelta(days=1)
    assert tasks.payments_due(now=iso(next_try)) == {"paid": 1}
    assert ChainApp.objects.get(pk=apps["ledger"].pk).desired_state == "running"  # resumed with the payment
    assert ChainApp.objects.get(pk=apps["notary"].pk).desired_state == "stopped"  # its stop is still open
    assert Suspension.objects.get().ended_at is None
    for app in apps.values():
        finish_open_operations(app.pk)
    report = tasks.suspensions_enforce(now=iso(next_try + dt.timedelta(hours=1)))
    assert report["lifted"] == ["acme-corp"]
    states = dict(ChainApp.objects.filter(tenant=corp["tenant"]).values_list("name", "desired_state"))
    assert states == {"ledger": "running", "notary": "running", "idle": "stopped"}
    assert owner_client.get(f"/api/v1/apps/{apps['ledger'].pk}").json()["suspended"] is None
    # ledger and notary: billing's resumes (the tenant's start was refused)
    assert Operation.objects.filter(app__tenant=corp["tenant"], kind="start").count() == 2
    assert Suspension.objects.get().ended_at == next_try + dt.timedelta(hours=1)
    assert tasks.suspensions_enforce(now=iso(next_try + dt.timedelta(days=1))) == {
        "suspended": [],
        "stopped": 0,
        "lifted": [],
    }
    invariants_hold()


def test_no_wallet_is_a_reason_too(bank, prices, corp, home_region, shanghai):
    metered(corp, home_region, shanghai)
    Account.objects.filter(number=bank["corporate"]).update(holder_tenant=None)
    tasks.month_close(now=iso(CLOSE_AT))
    invoice = Invoice.objects.get()
    assert tasks.payments_due(now=iso(invoice.due_at)) == {"no-wallet": 1}
    body = corp["admin"].get(f"/api/v1/tenant/invoices/{invoice.pk}").json()
    assert (body["status"], body["last_error_code"], body["attempts"]) == ("issued", "no-wallet", 1)


def test_usage_before_any_price_is_refused_not_guessed(bank, corp, home_region):
    UsageHourFactory(app=corp["apps"]["ledger"], region=home_region, hour=T)
    report = tasks.month_close(now=iso(CLOSE_AT))
    assert report["created"] == [] and report["refused"]["acme-corp"].startswith("no-price")
    assert not Invoice.objects.exists()


def test_invoices_are_for_admins_and_owners_only(bank, prices, corp, home_region, shanghai):
    metered(corp, home_region, shanghai)
    tasks.month_close(now=iso(CLOSE_AT))
    invoice = Invoice.objects.get()
    for client in (corp["viewer"], corp["developer"]):
        assert_problem(client.get("/api/v1/tenant/invoices"), 403)
        assert_problem(client.get(f"/api/v1/tenant/invoices/{invoice.pk}/html"), 403)

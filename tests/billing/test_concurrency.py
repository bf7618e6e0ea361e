"""Paying an invoice twice at once is one payment: two threads, and a real Celery worker.

Committed transactions (``transaction=True``): the attempts run on their own database
connections (threads) or in another process (the worker), as they do in production.
"""

from __future__ import annotations

import re
import threading

import pytest
from django.db import connection

from apps.billing import services, tasks
from apps.billing.models import Invoice
from apps.dcep.models import Account, Transfer
from apps.dcep.selectors import deep_checks, supply_report
from apps.dcep.tier1 import chain_supply
from tests.billing.conftest import CLOSE_AT, fund, iso
from tests.billing.test_flow import TOTAL, metered
from tests.integration.conftest import wait_for, worker_factory  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)

ATTEMPTS = 6


def _issued(bank, corp, home_region, shanghai) -> Invoice:
    metered(corp, home_region, shanghai)
    fund(bank, 1_000_000)
    tasks.month_close(now=iso(CLOSE_AT))
    return Invoice.objects.get()


def _paid_once(bank, invoice: Invoice) -> None:
    invoice.refresh_from_db()
    assert invoice.status == "paid"
    payments = Transfer.objects.filter(kind="payment", memo__contains=invoice.payment_key)
    assert [(str(t.pk), t.amount) for t in payments] == [(str(invoice.transfer_id), TOTAL)]
    assert Account.objects.get(number=bank["corporate"]).balance == 1_000_000 - TOTAL
    assert Account.objects.get(number=bank["revenue"]).balance == TOTAL
    report = supply_report(chain_supply())
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]
    assert all(check["ok"] for check in deep_checks())


def test_paying_twice_at_once_in_threads_is_one_payment(bank, prices, corp, home_region, shanghai):
    invoice = _issued(bank, corp, home_region, shanghai)
    start = threading.Barrier(ATTEMPTS)
    outcomes, errors = [], []

    def attempt():
        try:
            start.wait(timeout=10)
            outcomes.append(services.invoice_pay(invoice_id=invoice.pk, now=invoice.due_at, force=True).status)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(ATTEMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and outcomes == ["paid"] * ATTEMPTS
    _paid_once(bank, invoice)


def test_a_real_worker_given_the_same_payment_three_times_pays_once(
    bank,
    prices,
    corp,
    home_region,
    shanghai,
    worker_factory,  # noqa: F811
):
    invoice = _issued(bank, corp, home_region, shanghai)
    worker = worker_factory([])
    due = iso(invoice.due_at)
    tasks.invoice_pay.delay(str(invoice.pk), due, True)
    tasks.invoice_pay.delay(str(invoice.pk), due, True)
    tasks.payments_due.delay(due)
    wait_for(
        lambda: (
            len(re.findall(r"apps\.billing\.tasks\.\w+\[[-0-9a-f]+\] succeeded in ", worker.log_path.read_text())) == 3
        ),
        timeout=60,
        message="the worker to run the three tasks",
    )
    _paid_once(bank, invoice)
    _paid_once(bank, invoice)

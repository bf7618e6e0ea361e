"""Invoices of random usage (Hypothesis, real PostgreSQL): the lines add up to the total, the total is
within half a fen per line of the exact price of every hour at the price in force that hour, the
operators' share never exceeds it, and closing the month again gives the same invoice."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.billing import services
from apps.billing.models import InvoiceLine
from tests.billing.conftest import CLOSE_AT, OCT, PRICE_CHANGE, T
from tests.billing.factories import UsageHourFactory

pytestmark = pytest.mark.django_db
HOURS = 744
BEIJING = {False: (30, 50, 100), True: (40, 60, 100)}  # (node-hour, 1k tx, GB-month) before / from the change

usage = st.lists(
    st.tuples(
        st.integers(0, HOURS - 1),  # hour of October
        st.integers(0, 3 * 3600),  # node-seconds (up to 3 nodes)
        st.integers(0, 10**7),  # committed transactions
        st.integers(0, 10**13),  # storage bytes
    ),
    min_size=1,
    max_size=40,
    unique_by=lambda row: row[0],
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=usage)
def test_an_invoice_adds_up_to_the_exact_price_of_its_hours(prices, corp, home_region, rows):
    app = corp["apps"]["ledger"]
    with transaction.atomic():
        exact = Fraction(0)
        for hour, seconds, tx, storage in rows:
            at = T + dt.timedelta(hours=hour)
            UsageHourFactory(app=app, region=home_region, hour=at, node_seconds=seconds, tx_committed=tx,
                             storage_bytes=storage)  # fmt: skip
            node, per_k, gb = BEIJING[at >= PRICE_CHANGE]
            exact += Fraction(seconds * node, 3600) + Fraction(tx * per_k, 1000) + Fraction(storage * gb, 10**9 * HOURS)
        invoice, created = services.invoice_generate(tenant=corp["tenant"], month=OCT, now=CLOSE_AT)
        if invoice is None:  # every counter was 0: nothing to bill
            assert exact == 0 and not created
        else:
            lines = list(InvoiceLine.objects.filter(invoice=invoice))
            assert invoice.total_fen == sum(line.amount_fen for line in lines)
            assert abs(invoice.total_fen - exact) <= Fraction(len(lines), 2)
            assert 0 <= invoice.operator_share_fen == sum(line.operator_share_fen for line in lines)
            assert invoice.operator_share_fen <= invoice.total_fen
            again, created_again = services.invoice_generate(tenant=corp["tenant"], month=OCT, now=CLOSE_AT)
            assert (again.pk, again.total_fen, created_again) == (invoice.pk, invoice.total_fen, False)
        transaction.set_rollback(True)  # the next example starts from no usage and no invoice

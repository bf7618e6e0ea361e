"""A bigger month: 20 apps on 2 regions (29,760 usage rows) is invoiced with a number of queries
that does not grow with the apps or the hours; the invoice list's queries do not grow with invoices."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.billing import services
from apps.billing.models import Invoice, InvoiceLine
from apps.chainapps.models import ChainApp
from tests.api.conftest import count_queries
from tests.billing.conftest import CLOSE_AT, OCT
from tests.billing.factories import month_of_usage

pytestmark = pytest.mark.django_db
APPS = 20


def test_a_big_month_costs_a_fixed_number_of_queries(prices, corp, home_region, shanghai, record_property):
    tenant = corp["tenant"]
    template = corp["apps"]["ledger"]
    apps = [template]
    for i in range(APPS - 1):  # rows only: the invoice needs apps, not their nodes
        apps.append(
            ChainApp.objects.create(tenant=tenant, name=f"app-{i:02d}", framework=template.framework, status="running")
        )
    for app in apps:
        month_of_usage(app, home_region, OCT, tx_committed=40, storage_bytes=5 * 10**8)
        month_of_usage(app, shanghai, OCT, node_seconds=1800, tx_committed=7)
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as ctx:
        invoice, created = services.invoice_generate(tenant=tenant, month=OCT, now=CLOSE_AT)
    elapsed = time.perf_counter() - started
    assert created
    # beijing: 2 price periods x 3 kinds, shanghai: 1 period x 2 kinds (no storage there), per app
    assert InvoiceLine.objects.filter(invoice=invoice).count() == APPS * (2 * 3 + 2)
    record_property("invoice_generate_seconds", round(elapsed, 3))
    record_property("usage_rows", APPS * 744 * 2)
    print(f"invoice_generate: {APPS * 744 * 2} usage rows, {len(ctx.captured_queries)} queries, {elapsed:.3f} s")
    assert len(ctx.captured_queries) <= 20, [q["sql"][:120] for q in ctx.captured_queries]


def test_the_invoice_list_does_not_query_per_invoice(prices, corp, home_region):
    ledger = corp["apps"]["ledger"]
    month_of_usage(ledger, home_region, OCT, tx_committed=1)
    services.invoice_generate(tenant=corp["tenant"], month=OCT, now=CLOSE_AT)
    url = "/api/v1/tenant/invoices"
    count_queries(corp["admin"], url)  # the token's first use is recorded once
    few = count_queries(corp["admin"], url)
    for month in (dt.date(2026, 11, 1), dt.date(2026, 12, 1)):
        month_of_usage(ledger, home_region, month, tx_committed=1)
        services.invoice_generate(tenant=corp["tenant"], month=month, now=dt.datetime(2027, 1, 2, tzinfo=dt.UTC))
    assert Invoice.objects.count() == 3
    assert count_queries(corp["admin"], url) == few
    assert count_queries(corp["admin"], f"{url}/{Invoice.objects.first().pk}") <= few + 1

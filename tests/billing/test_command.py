"""bsn_billing as the platform operator uses it: set prices, close a month, show and pay an invoice."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from apps.billing.models import Invoice, PriceList
from tests.billing.conftest import CLOSE_AT, fund, iso
from tests.billing.test_flow import TOTAL, metered

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command("bsn_billing", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_prices_by_command(home_region):
    out = run("price", "set", "cn-beijing", "--from", "2099-01-01T00:00:00Z", "--node-hour", "30",
              "--per-1000-tx", "50", "--gb-month", "100", "--share-bp", "3000")  # fmt: skip
    assert "cn-beijing from 2099-01-01T00:00:00+00:00" in out
    assert "node-hour 30" in run("price", "list")
    with pytest.raises(CommandError, match="whole fen"):
        run("price", "set", "cn-beijing", "--node-hour", "0.3", "--per-1000-tx", "1", "--gb-month", "1",
            "--share-bp", "0")  # fmt: skip
    with pytest.raises(CommandError, match="price-exists"):
        run("price", "set", "cn-beijing", "--from", "2099-01-01T00:00:00Z", "--node-hour", "1",
            "--per-1000-tx", "1", "--gb-month", "1", "--share-bp", "0")  # fmt: skip
    assert PriceList.objects.count() == 1


def test_close_show_and_pay_by_command(bank, prices, corp, home_region, shanghai):
    metered(corp, home_region, shanghai)
    fund(bank, TOTAL)
    with pytest.raises(CommandError, match="month-open"):
        run("close", "2026-10", "--now", "2026-10-31T23:00:00Z")
    assert "1 issued" in run("close", "2026-10", "--now", iso(CLOSE_AT))
    assert "0 issued, 1 existing" in run("close", "2026-10", "--now", iso(CLOSE_AT))
    shown = run("invoice", "show", "acme-corp", "2026-10")
    assert "BSN-202610-acme-corp" in shown and f"total {TOTAL} fen (CNY 317.24)" in shown
    assert "region operators' share 9499 fen" in shown
    assert "paid" in run("pay", "--invoice", "BSN-202610-acme-corp", "--now", iso(CLOSE_AT))
    assert Invoice.objects.get().status == "paid"
    assert "paid" in run("invoice", "list", "--tenant", "acme-corp")

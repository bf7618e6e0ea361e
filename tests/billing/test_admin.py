"""The operator's billing admin: pages render, prices are added through the service (checked and
audited), invoices are read-only, "pay now" pays once."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.billing import tasks
from apps.billing.models import BillingAccount, Invoice, PriceList, Suspension
from tests.billing.conftest import CLOSE_AT, fund, iso
from tests.billing.test_flow import TOTAL, metered

pytestmark = pytest.mark.django_db


@pytest.fixture
def billed(bank, prices, corp, home_region, shanghai):
    metered(corp, home_region, shanghai)
    tasks.month_close(now=iso(CLOSE_AT))
    return Invoice.objects.get()


def test_pages_render_and_invoices_are_read_only(admin_client, billed):
    for model in ("pricelist", "invoice", "billingaccount", "suspension"):
        assert admin_client.get(f"/admin/billing/{model}/").status_code == 200, model
    detail = admin_client.get(f"/admin/billing/invoice/{billed.pk}/change/").content.decode()
    assert billed.number in detail and 'name="_save"' not in detail
    assert admin_client.get("/admin/billing/invoice/add/").status_code == 403
    assert admin_client.post(f"/admin/billing/invoice/{billed.pk}/delete/", {"post": "yes"}).status_code == 403
    price = PriceList.objects.first()
    assert 'name="_save"' not in admin_client.get(f"/admin/billing/pricelist/{price.pk}/change/").content.decode()
    assert Suspension.objects.count() == 0


def test_a_price_added_in_the_admin_goes_through_the_service(admin_client, home_region):
    form = {
        "region": home_region.pk,
        "valid_from_0": "2099-01-01",
        "valid_from_1": "00:00:00",
        "node_hour_fen": 31,
        "per_1000_tx_fen": 51,
        "gb_month_fen": 101,
        "operator_share_bp": 2000,
    }
    resp = admin_client.post("/admin/billing/pricelist/add/", form)
    assert resp.status_code == 302, resp.content.decode()[:2000]
    price = PriceList.objects.get()
    assert (price.node_hour_fen, price.operator_share_bp) == (31, 2000)
    assert AuditEvent.objects.filter(action="billing.price.set", object_id=str(price.pk)).exists()
    for bad in ({"valid_from_1": "00:30:00"}, {"valid_from_0": "2020-01-01"}, {}):  # not an hour / past / duplicate
        page = admin_client.post("/admin/billing/pricelist/add/", {**form, **bad})
        assert page.status_code == 200 and "errornote" in page.content.decode()
    assert PriceList.objects.count() == 1


def test_pay_now_pays_once(admin_client, bank, billed):
    fund(bank, TOTAL)
    for _ in range(2):
        admin_client.post("/admin/billing/invoice/", {"action": "pay_now", "_selected_action": [billed.pk]})
    billed.refresh_from_db()
    assert billed.status == "paid" and billed.attempts == 1


def test_the_paying_wallet_must_be_the_tenants(admin_client, bank, corp):
    from apps.dcep.models import Account

    revenue = Account.objects.get(number=bank["revenue"])
    page = admin_client.post("/admin/billing/billingaccount/add/", {"tenant": corp["tenant"].pk, "wallet": revenue.pk})
    assert page.status_code == 200 and "not a corporate wallet of acme-corp" in page.content.decode()
    own = Account.objects.get(number=bank["corporate"])
    resp = admin_client.post("/admin/billing/billingaccount/add/", {"tenant": corp["tenant"].pk, "wallet": own.pk})
    assert resp.status_code == 302
    assert BillingAccount.objects.get().wallet == own

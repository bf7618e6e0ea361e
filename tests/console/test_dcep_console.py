"""DCEP in the console: the supply and the invariants above the settlement batches (read-only),
the deep check, and the dashboard's verdict, against a real tier-1 node and the journal."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.dcep import services
from apps.dcep.models import Account, Institution, Settlement
from apps.dcep.settlement import settlement_run, settlement_start
from apps.dcep.tier1 import issuance_create

pytestmark = pytest.mark.django_db(transaction=True)


def _actor(slug: str) -> services.Actor:
    inst = Institution.objects.select_related("tenant").get(tenant__slug=slug)
    return services.Actor(tenant=inst.tenant, institution=inst)


def test_supply_and_invariants_shown_and_a_broken_balance_caught(console, tier1):
    issuance_create(operator_slug="bank-a", amount=100_000, request_key="console:issue")
    a, b = _actor("bank-a"), _actor("bank-b")
    wa = services.wallet_open(actor=a, holder_name="Alice", tier=2, kind="personal").number
    wb = services.wallet_open(actor=b, holder_name="Bob", tier=2, kind="personal").number
    services.exchange_create(actor=a, wallet=wa, amount=50_000)
    services.payment_create(actor=a, from_wallet=wa, to_wallet=wb, amount=2_000)
    batch, _ = settlement_start()
    assert settlement_run(batch.pk).status == Settlement.Status.ANCHORED

    page = console.get("/admin/dcep/settlement/").content.decode()
    panel = page[page.index('id="dcep-supply"') :]
    circulating = sum(Account.objects.exclude(kind=Account.Kind.ISSUANCE).values_list("balance", flat=True))
    assert circulating == 100_000
    assert f"in circulation <strong>{circulating}</strong> fen" in panel and ">hold<" in panel
    assert "NO" not in panel.split("</table>")[1]  # every check row says yes
    assert str(batch.pk) in page  # the batch listed under the panel
    deep = console.get("/admin/dcep/settlement/invariants/").content.decode()
    assert "Every invariant holds." in deep and "entries hash-chained per account" in deep
    dashboard = console.get("/admin/console/").content.decode()
    assert "DCEP invariants</a>:" in dashboard and ">hold<" in dashboard.split('id="dcep"')[1].split("</h2>")[0]

    # A balance edited behind the journal's back: the invariants say so, everywhere.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE dcep_account SET balance = balance + 1 WHERE number = %s", [wb])
    page = console.get("/admin/dcep/settlement/").content.decode()
    assert "BROKEN" in page[page.index('id="dcep-supply"') :]
    deep = console.get("/admin/dcep/settlement/invariants/").content.decode()
    assert "An invariant does not hold." in deep and "1 accounts differ" in deep
    assert "a DCEP invariant does not hold" in console.get("/admin/console/").content.decode()
    with connection.cursor() as cursor:  # put it back (the database outlives this test's transaction)
        cursor.execute("UPDATE dcep_account SET balance = balance - 1 WHERE number = %s", [wb])

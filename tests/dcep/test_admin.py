"""The operator's Django admin for DCEP: pages render, the journal is read-only, freezing goes through the service."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.dcep import services
from apps.dcep.errors import DcepError
from apps.dcep.models import Account, Hold, Institution, Settlement, Transfer
from apps.dcep.settlement import settlement_run, settlement_start
from apps.dcep.tier1 import issuance_create

pytestmark = pytest.mark.django_db(transaction=True)


def _actor(slug: str) -> services.Actor:
    inst = Institution.objects.select_related("tenant").get(tenant__slug=slug)
    return services.Actor(tenant=inst.tenant, institution=inst)


@pytest.fixture
def journal(tier1):
    """A little of everything: an issuance, wallets, an exchange, a hold, an anchored interbank payment."""
    issuance_create(operator_slug="bank-a", amount=100_000, request_key="admin:issue")
    a, b = _actor("bank-a"), _actor("bank-b")
    wa = services.wallet_open(actor=a, holder_name="Alice", tier=2, kind="personal").number
    wb = services.wallet_open(actor=b, holder_name="Bob", tier=2, kind="personal").number
    services.exchange_create(actor=a, wallet=wa, amount=50_000)
    services.hold_create(actor=a, from_wallet=wa, to_wallet=wb, amount=1_000, expires_in_s=600)
    services.payment_create(actor=a, from_wallet=wa, to_wallet=wb, amount=2_000)
    batch, _ = settlement_start()
    assert settlement_run(batch.pk).status == Settlement.Status.ANCHORED
    return wa, wb


PAGES = ["institution", "wallet", "transfer", "settlement", "hold"]


@pytest.mark.parametrize("model", PAGES)
def test_changelists_and_details_render(admin_client, journal, model):
    resp = admin_client.get(f"/admin/dcep/{model}/")
    assert resp.status_code == 200
    rows = {
        "institution": Institution.objects.all(),
        "wallet": Account.objects.filter(kind=Account.Kind.WALLET),
        "transfer": Transfer.objects.all(),
        "settlement": Settlement.objects.all(),
        "hold": Hold.objects.all(),
    }[model]
    assert rows.exists()
    detail = admin_client.get(f"/admin/dcep/{model}/{rows.first().pk}/change/")
    assert detail.status_code == 200


def test_wallets_list_only_wallets_and_filter(admin_client, journal):
    wa, wb = journal
    page = admin_client.get("/admin/dcep/wallet/").content.decode()
    assert wa in page and wb in page
    assert page.count('name="_selected_action"') == 2, "vaults and hold accounts are not wallets"
    operator = Institution.objects.get(tenant__slug="bank-b")
    filtered = admin_client.get("/admin/dcep/wallet/", {"operator__id__exact": operator.pk}).content.decode()
    assert wb in filtered and wa not in filtered


@pytest.mark.parametrize("model", ["transfer", "settlement", "hold"])
def test_the_journal_is_read_only(admin_client, journal, model):
    assert admin_client.get(f"/admin/dcep/{model}/add/").status_code == 403
    row = {"transfer": Transfer, "settlement": Settlement, "hold": Hold}[model].objects.first()
    assert admin_client.post(f"/admin/dcep/{model}/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    detail = admin_client.get(f"/admin/dcep/{model}/{row.pk}/change/").content.decode()
    assert 'name="_save"' not in detail
    # Institutions are read-only too since the console (docs/console.md); a tenant's page has a form.
    editable = admin_client.get(f"/admin/tenants/tenant/{Institution.objects.first().tenant_id}/change/")
    assert 'name="_save"' in editable.content.decode(), "the marker above is the one Django prints"


def test_freeze_and_unfreeze_go_through_the_service(admin_client, journal):
    wa, wb = journal
    pk = Account.objects.get(number=wa).pk
    resp = admin_client.post("/admin/dcep/wallet/", {"action": "freeze", "_selected_action": [pk]}, follow=True)
    assert resp.status_code == 200 and "1 wallet(s) now frozen" in resp.content.decode()
    assert Account.objects.get(number=wa).status == "frozen"
    event = AuditEvent.objects.filter(action="dcep.wallet.update", object_id=wa).latest("sequence")
    assert event.data == {"status": "frozen"} and event.tenant.slug == "bank-a"

    with pytest.raises(DcepError, match="frozen"):  # the rules apply at once: a frozen wallet cannot pay
        services.payment_create(actor=_actor("bank-a"), from_wallet=wa, to_wallet=wb, amount=1)

    admin_client.post("/admin/dcep/wallet/", {"action": "unfreeze", "_selected_action": [pk]})
    assert Account.objects.get(number=wa).status == "active"

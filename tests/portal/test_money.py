"""Digital currency (/portal/dcep/) and billing (/portal/billing/) in the portal, against a real
tier-1 node (tests/dcep): money moved through the API, then read as a holder, an operator
bank and the central bank would; invoices closed and paid by the billing services."""

from __future__ import annotations

import uuid

import pytest

from apps.audit.models import AuditEvent
from apps.billing.models import BillingAccount, Invoice
from apps.billing.services import invoice_pay, month_close
from apps.chainapps.models import LedgerNode
from apps.dcep.models import Account
from apps.dcep.settlement import settlement_run
from apps.tenants.models import Role, Tenant
from tests.api.conftest import row_counts
from tests.billing import conftest as billing_fixtures
from tests.billing.factories import month_of_usage
from tests.dcep import conftest as dcep_fixtures
from tests.dcep.helpers import created, money_state, open_wallet
from tests.factories import MembershipFactory
from tests.portal.conftest import post, signed_in
from tests.portal.pages import (
    assert_not_found,
    assert_page,
    assert_redirect,
    assert_role_refused,
    messages_of,
    queries,
)

pytestmark = pytest.mark.django_db

# Fixtures: the central bank, bank-a and bank-b with a real tier-1 node; the platform's revenue
# wallet (bank-a) and the enterprise acme-corp's corporate wallet (bank-b); prices; its apps.
tier1, institutions, enterprise, home_region = (
    dcep_fixtures.tier1,
    dcep_fixtures.institutions,
    dcep_fixtures.enterprise,
    dcep_fixtures.home_region,
)
bank, prices, corp, shanghai = (
    billing_fixtures.bank,
    billing_fixtures.prices,
    billing_fixtures.corp,
    billing_fixtures.shanghai,
)


@pytest.fixture
def moved(bank, corp):
    """acme-corp's corporate wallet funded with ¥5,000.00; it pays ¥123.45 to a personal wallet
    at bank-a (an interbank payment) and holds ¥10.00 for it."""
    billing_fixtures.fund(bank, 500_000)
    personal = open_wallet(bank["a"], name="Zhang Wei")
    payer = dcep_fixtures.Client(corp["owner"])
    corporate = bank["corporate"]
    created(
        payer.post("payments", {"from_wallet": corporate, "to_wallet": personal, "amount": 12_345, "memo": "lunch"})
    )
    created(
        payer.post("holds", {"from_wallet": corporate, "to_wallet": personal, "amount": 1_000, "expires_in_s": 3600})
    )
    return {"corporate": corporate, "personal": personal, "revenue": bank["revenue"]}


def test_a_holder_sees_its_wallet_transfers_and_holds(bank, corp, moved):
    client = signed_in(corp["owner"])
    page = assert_page(client.get("/portal/dcep/"))
    assert 'href="/portal/dcep/"' in page and "Digital currency" in page  # in the navigation now
    assert moved["corporate"] in page and "¥4,876.55" in page  # 500,000 - 12,345 fen, held included
    assert "of which ¥10.00 held" in page and "¥123.45" in page and "lunch" in page
    assert moved["personal"] in page  # the payee's number, on the transfer
    assert 'href="/portal/dcep/wallets/' + moved["personal"] not in page  # …but not its page
    assert "1 pending hold" in page
    wallet = assert_page(client.get(f"/portal/dcep/wallets/{moved['corporate']}/"))
    assert "¥4,876.55" in wallet and "¥4,866.55 available" in wallet and "lunch" in wallet and "¥10.00" in wallet
    holds = assert_page(client.get("/portal/dcep/holds/"))
    assert "¥10.00" in holds and ">pending</span>" in holds
    transfers = assert_page(client.get("/portal/dcep/transfers/"))
    assert "¥123.45" in transfers and "¥5,000.00" in transfers  # the payment and the distribution
    assert "No settlement batches" in assert_page(client.get("/portal/dcep/settlements/"))
    # Someone else's wallet — the payee's, the platform's: not found.
    assert_not_found(client.get(f"/portal/dcep/wallets/{moved['personal']}/"))
    assert_not_found(client.get(f"/portal/dcep/wallets/{moved['revenue']}/"))
    assert_not_found(client.get("/portal/dcep/wallets/not-a-number/"))
    # A viewer of the tenant reads it too (DCEP reads are for viewers, as in the API).
    viewer = signed_in(MembershipFactory(tenant=corp["tenant"], role=Role.VIEWER))
    assert moved["corporate"] in assert_page(viewer.get("/portal/dcep/"))


def test_a_tenant_without_wallets_sees_no_money(bank, moved):
    stranger = Tenant.objects.create(slug="stranger-co", name="Stranger Co")
    client = signed_in(MembershipFactory(tenant=stranger, role=Role.OWNER))
    assert "Digital currency" not in assert_page(client.get("/portal/team/"))  # not in the navigation
    page = assert_page(client.get("/portal/dcep/"))
    assert "Your tenant holds no wallet yet" in page and moved["corporate"] not in page and "¥" not in page
    assert_not_found(client.get(f"/portal/dcep/wallets/{moved['corporate']}/"))
    assert "No transfers you can see yet" in assert_page(client.get("/portal/dcep/transfers/"))


def test_an_operator_bank_sees_the_wallets_it_operates(bank, moved):
    client = signed_in(bank["a"].membership)
    page = assert_page(client.get("/portal/dcep/"))
    assert "Wallets you operate" in page and "Reserve (vault)" in page
    assert moved["personal"] in page and moved["revenue"] in page and "Zhang Wei" in page
    vault = Account.objects.get(kind="vault", operator__tenant__slug="bank-a").balance
    assert f"¥{vault // 100:,}.{vault % 100:02d}" in page
    assert moved["corporate"] not in page.split("Recent transfers")[0]  # bank-b's wallet is not listed…
    assert_not_found(client.get(f"/portal/dcep/wallets/{moved['corporate']}/"))  # …nor shown
    assert "¥123.45" in assert_page(client.get(f"/portal/dcep/wallets/{moved['personal']}/"))


def test_the_central_bank_sees_supply_invariants_and_anchored_batches(bank, moved, tier1):
    cb = bank["cb"]
    batch = settlement_run(created(cb.post("settlements"), 202)["id"])
    assert batch.status == "anchored", batch.last_error
    client = signed_in(cb.membership)
    page = assert_page(client.get("/portal/dcep/"))
    assert "¥510,000.00" in page  # issued: 1,000,000 + 50,000,000 fen
    assert "all hold</span>" in page and "FAILS" not in page
    assert "chain: issued - withdrawn = sum of allocations" in page and "bank-a" in page and "bank-b" in page
    assert f"at height <strong>{batch.anchor_height}</strong>" in page and batch.anchor_tx_id[:15] in page
    assert "bank-a ¥123.45" in page and "bank-b -¥123.45" in page  # the net positions
    assert "Deep checks" not in page and "run them now" in page
    deep = assert_page(client.get("/portal/dcep/?deep=1"))
    assert "Deep checks" in deep and "every transfer&#x27;s legs sum to zero" in deep and "FAILS" not in deep
    batches = assert_page(client.get("/portal/dcep/settlements/"))
    assert batch.merkle_root[:15] in batches and f"<strong>{batch.anchor_height}</strong>" in batches
    # The operators see the batches too (their position is in each); a holder does not.
    assert batch.anchor_tx_id[:15] in assert_page(signed_in(bank["a"].membership).get("/portal/dcep/settlements/"))
    # The chain cannot be read: the journal's figures, said so, not an error page.
    LedgerNode.objects.filter(app=tier1[0].app).update(state=LedgerNode.State.UNHEALTHY)
    down = assert_page(client.get("/portal/dcep/"))
    assert "cannot be read right now" in down and "journal: issued - withdrawn" in down
    assert "chain: issued - withdrawn" not in down


def test_money_pages_change_nothing_and_are_reads(bank, moved):
    before = money_state()
    client = signed_in(bank["cb"].membership)
    for url in ("/portal/dcep/", "/portal/dcep/?deep=1", "/portal/dcep/transfers/", "/portal/dcep/settlements/"):
        assert_page(client.get(url))
    assert client.post("/portal/dcep/").status_code == 403  # no CSRF token: refused before anything
    assert post(client, "/portal/dcep/").status_code == 405  # and no write here at all
    assert money_state() == before


def test_money_lists_do_not_query_per_row(bank, corp, moved):
    payer = dcep_fixtures.Client(corp["owner"])
    holder, operator = signed_in(corp["owner"]), signed_in(bank["a"].membership)
    pages = [
        (holder, "/portal/dcep/"),
        (holder, "/portal/dcep/transfers/"),
        (holder, "/portal/dcep/holds/"),
        (holder, f"/portal/dcep/wallets/{moved['corporate']}/"),
        (operator, "/portal/dcep/"),
    ]

    def more(n: int) -> None:
        for _ in range(n):
            created(
                payer.post("payments", {"from_wallet": moved["corporate"], "to_wallet": moved["personal"], "amount": 1})
            )
            created(
                payer.post(
                    "holds",
                    {
                        "from_wallet": moved["corporate"],
                        "to_wallet": moved["personal"],
                        "amount": 1,
                        "expires_in_s": 60,
                    },
                )
            )
            open_wallet(bank["a"], name="more")

    few = [queries(client, url) for client, url in pages]
    more(6)
    assert [queries(client, url) for client, url in pages] == few


def test_the_central_bank_starts_a_settlement_batch(bank, moved):
    from apps.dcep.models import Settlement

    cb_owner = signed_in(bank["cb"].membership)
    page = assert_page(cb_owner.get("/portal/dcep/settlements/"))
    assert "Settle now" in page
    assert_redirect(post(cb_owner, "/portal/dcep/settlements/"), "/portal/dcep/settlements/")
    assert "A settlement batch is started" in messages_of(cb_owner, "/portal/dcep/settlements/")
    batch = Settlement.objects.get()
    assert batch.status == "pending" and batch.started_by == bank["cb"].tenant
    event = AuditEvent.objects.get(action="dcep.settlement.start")
    assert event.object_id == str(batch.pk) and event.actor == bank["cb"].membership.user
    # Again while it is open: the same batch, said so.
    post(cb_owner, "/portal/dcep/settlements/")
    assert "already open (pending)" in messages_of(cb_owner, "/portal/dcep/settlements/")
    assert Settlement.objects.count() == 1
    # An operator bank may not; a viewer of the central bank may not; nor without CSRF.
    operator = signed_in(bank["a"].membership)
    assert "Settle now" not in assert_page(operator.get("/portal/dcep/settlements/"))
    post(operator, "/portal/dcep/settlements/")
    assert "Only the central bank may do this." in messages_of(operator, "/portal/dcep/settlements/")
    viewer = signed_in(MembershipFactory(tenant=bank["cb"].tenant, role=Role.VIEWER))
    assert_role_refused(post(viewer, "/portal/dcep/settlements/"), "developer")
    assert cb_owner.post("/portal/dcep/settlements/").status_code == 403
    assert Settlement.objects.count() == 1


# --------------------------------------------------------------------------- billing

OCT = billing_fixtures.OCT
CLOSE_AT = billing_fixtures.CLOSE_AT


@pytest.fixture
def invoice(bank, prices, corp, home_region):
    month_of_usage(corp["apps"]["ledger"], home_region, OCT, tx_committed=10)
    assert month_close(month=OCT, now=CLOSE_AT)["created"] == ["BSN-202610-acme-corp"]
    return Invoice.objects.get()


def test_an_admin_reads_invoices_and_sees_them_paid(bank, corp, invoice):
    admin = signed_in(MembershipFactory(tenant=corp["tenant"], role=Role.ADMIN))
    page = assert_page(admin.get("/portal/billing/"))
    total = f"¥{invoice.total_fen // 100:,}.{invoice.total_fen % 100:02d}"
    assert "BSN-202610-acme-corp" in page and total in page and ">unpaid</span>" in page
    assert bank["corporate"] in page and "your only corporate wallet" in page
    assert "The owner of the tenant chooses the paying wallet." in page and "Use this wallet" not in page
    detail = assert_page(admin.get(f"/portal/billing/invoices/{invoice.pk}/"))
    assert "ledger" in detail and "node-hours" in detail and total in detail and "Printable invoice" in detail
    printable = admin.get(f"/api/v1/tenant/invoices/{invoice.pk}/html")  # the link, with the same session
    assert printable.status_code == 200 and "BSN-202610-acme-corp" in printable.content.decode()
    billing_fixtures.fund(bank, 5_000_000)
    assert invoice_pay(invoice_id=invoice.pk, now=invoice.due_at, force=True).status == "paid"
    paid = assert_page(admin.get("/portal/billing/"))
    assert ">paid</span>" in paid and "¥0.00" in paid
    assert f'from wallet <span class="mono">{bank["corporate"]}</span>' in assert_page(
        admin.get(f"/portal/billing/invoices/{invoice.pk}/")
    )


def test_billing_is_for_admins_and_another_tenants_invoice_is_not_found(bank, corp, invoice):
    developer = signed_in(MembershipFactory(tenant=corp["tenant"], role=Role.DEVELOPER))
    assert_role_refused(developer.get("/portal/billing/"), "admin")
    assert_role_refused(developer.get(f"/portal/billing/invoices/{invoice.pk}/"), "admin")
    assert "/portal/billing/" not in assert_page(developer.get("/portal/team/"))  # not in the navigation
    other = signed_in(bank["a"].membership)  # an owner, of another tenant
    assert_not_found(other.get(f"/portal/billing/invoices/{invoice.pk}/"))
    assert_not_found(other.get(f"/portal/billing/invoices/{uuid.uuid4()}/"))
    assert "BSN-202610-acme-corp" not in assert_page(other.get("/portal/billing/"))


def test_the_owner_chooses_the_paying_wallet(bank, corp, moved):
    second = open_wallet(bank["a"], tier=1, kind="corporate", holder_tenant=corp["tenant"].slug, name="Acme 2")
    owner = signed_in(corp["owner"])
    page = assert_page(owner.get("/portal/billing/"))
    assert "No paying wallet: choose one of your corporate wallets below." in page and 'for="id_wallet"' in page
    assert_redirect(post(owner, "/portal/billing/", {"wallet": second}), "/portal/billing/")
    assert f"Invoices are paid from wallet {second} from now on." in messages_of(owner, "/portal/billing/")
    assert BillingAccount.objects.get(tenant=corp["tenant"]).wallet.number == second
    assert AuditEvent.objects.filter(action="billing.wallet.set", data__wallet=second).count() == 1


@pytest.mark.parametrize(
    ("wallet", "status", "message"),
    [
        ("123", 400, "does not match"),
        ("", 400, "This field is required."),
        ("REVENUE", 404, "is not a corporate wallet of acme-corp"),
        ("PERSONAL", 404, "is not a corporate wallet of acme-corp"),
    ],
)
def test_a_wallet_that_is_not_yours_is_refused_on_the_form(bank, corp, moved, wallet, status, message):
    wallet = {"REVENUE": moved["revenue"], "PERSONAL": moved["personal"]}.get(wallet, wallet)
    owner = signed_in(corp["owner"])
    before = row_counts(), BillingAccount.objects.count()
    page = assert_page(post(owner, "/portal/billing/", {"wallet": wallet}), status)
    assert message in page and 'class="field-error"' in page
    assert (row_counts(), BillingAccount.objects.count()) == before


def test_choosing_the_wallet_needs_the_owner_and_csrf(bank, corp, moved):
    admin = signed_in(MembershipFactory(tenant=corp["tenant"], role=Role.ADMIN))
    owner = signed_in(corp["owner"])
    before = row_counts(), BillingAccount.objects.count()
    assert_role_refused(post(admin, "/portal/billing/", {"wallet": moved["corporate"]}), "owner")
    assert owner.post("/portal/billing/", {"wallet": moved["corporate"]}).status_code == 403
    assert (row_counts(), BillingAccount.objects.count()) == before

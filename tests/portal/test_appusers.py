"""An app's users and keys in the portal (/portal/apps/<id>/users/) against a SimLedger node:
upload a public key, custody, revoke, export a custody key once; roles, other tenants, bad
input, a ledger that does not answer, CSRF."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from apps.audit.models import AuditEvent
from apps.chainapps.models import LedgerNode
from apps.gateway.models import AppUser
from apps.tenants.models import Role
from bsn.client import generate_key
from bsn.ledger.crypto import b64encode, public_key_of
from tests.api.conftest import row_counts
from tests.custody import conftest as custody_fixtures
from tests.factories import MembershipFactory
from tests.gateway import conftest as gateway_fixtures
from tests.portal.conftest import post, signed_in
from tests.portal.pages import (
    assert_not_found,
    assert_page,
    assert_redirect,
    assert_role_refused,
    audit_text,
    messages_of,
    queries,
)

pytestmark = pytest.mark.django_db

# The gateway's and custody's fixtures: a provisioned app whose node is a SimLedger, a key, a master key.
app, sim, alice_key, k1 = gateway_fixtures.app, gateway_fixtures.sim, gateway_fixtures.alice_key, custody_fixtures.k1


def users_url(app) -> str:
    return f"/portal/apps/{app.pk}/users/"


def state() -> dict:
    return {
        **row_counts(),
        "appusers": list(AppUser.objects.order_by("name").values_list("name", "status", "exported_at")),
    }


@pytest.fixture
def carol(owner, app, sim, k1):
    """Custody user carol, registered through the portal by the owner."""
    client = signed_in(owner)
    assert_redirect(post(client, users_url(app), {"name": "carol", "mode": "custody"}), users_url(app))
    return AppUser.objects.get(name="carol")


def test_a_developer_registers_an_uploaded_key(member, app, sim, alice_key):
    client = signed_in(member)
    empty = assert_page(client.get(users_url(app)))
    assert "No users yet" in empty and "Register a user" in empty and 'for="id_public_key"' in empty
    resp = post(client, users_url(app), {"name": "alice", "mode": "upload", "public_key": alice_key[1]})
    assert_redirect(resp, users_url(app))
    page = messages_of(client, users_url(app))
    assert "User alice is registered on the ledger" in page
    assert sim.users["alice"] == alice_key[1]  # the ledger knows her key
    user = AppUser.objects.get(name="alice")
    assert user.status == "active" and user.mode == "upload"
    assert "uploaded (yours)" in page and "Revoke…" in page and "Export key" not in page
    event = AuditEvent.objects.get(action="appuser.create")
    assert event.actor == member.user and event.data["public_key"] == alice_key[1]


def test_custody_user_key_is_exported_once_by_an_admin(owner, member, app, sim, carol):
    assert sim.users["carol"] == carol.public_key and carol.mode == "custody"
    assert "Export key…" not in assert_page(signed_in(member).get(users_url(app)))  # developers do not export
    client = signed_in(owner)
    page = assert_page(client.get(users_url(app)))
    assert "kept by the platform" in page and "Export key…" in page
    warning = assert_page(client.get(f"{users_url(app)}{carol.pk}/export/"))
    assert "A custody key is handed out once." in warning
    resp = post(client, f"{users_url(app)}{carol.pk}/export/")
    shown = assert_page(resp)
    assert resp["Cache-Control"] == "no-store" and "shown only this once" in shown
    private = shown.split('id="key-b64" class="mono" readonly value="')[1].split('"')[0]
    assert public_key_of(private) == carol.public_key  # the very key the ledger knows
    pem = shown.split('readonly rows="4">')[1].split("</textarea>")[0]
    seed = load_pem_private_key(pem.encode(), None).private_bytes_raw()
    assert b64encode(seed) == private
    # Once: a second export is refused with the reason, and the key is nowhere else.
    again = post(client, f"{users_url(app)}{carol.pk}/export/")
    assert_redirect(again, users_url(app))
    later = messages_of(client, users_url(app))
    assert "a key is exported once" in later and private not in later and "Export key…" not in later
    assert "exported" in later
    assert private not in audit_text() and pem.splitlines()[1] not in audit_text()
    assert AuditEvent.objects.filter(action="custody.export", object_id=str(carol.pk)).count() == 1


def test_developers_cannot_export_and_viewers_cannot_write(owner, member, app, sim, carol, alice_key):
    developer = signed_in(member)
    viewer = signed_in(MembershipFactory(tenant=owner.tenant, role=Role.VIEWER, user__username="vera"))
    before = state()
    assert_role_refused(developer.get(f"{users_url(app)}{carol.pk}/export/"), "admin")
    assert_role_refused(post(developer, f"{users_url(app)}{carol.pk}/export/"), "admin")
    page = assert_page(viewer.get(users_url(app)))
    assert "carol" in page and "Register a user" not in page and "Revoke…" not in page
    assert_role_refused(post(viewer, users_url(app), {"name": "x", "public_key": alice_key[1]}), "developer")
    assert_role_refused(viewer.get(f"{users_url(app)}{carol.pk}/revoke/"), "developer")
    assert_role_refused(post(viewer, f"{users_url(app)}{carol.pk}/revoke/"), "developer")
    assert state() == before and "carol" not in sim.revoked


def test_revoke_asks_then_revokes_on_the_ledger(owner, app, sim, carol):
    client = signed_in(owner)
    confirm = assert_page(client.get(f"{users_url(app)}{carol.pk}/revoke/"))
    assert "Revoke user carol" in confirm and "Its key, kept by the platform, is destroyed." in confirm
    assert_redirect(post(client, f"{users_url(app)}{carol.pk}/revoke/"), users_url(app))
    assert "carol" in sim.revoked
    carol.refresh_from_db()
    assert carol.status == "revoked"
    page = messages_of(client, users_url(app))
    assert "User carol is revoked." in page and "Export key…" not in page
    # The export of a revoked user's destroyed key is refused with the reason.
    resp = post(client, f"{users_url(app)}{carol.pk}/export/")
    assert "destroyed" in messages_of(client, resp["Location"]).lower()


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"name": "bad name!", "public_key": "KEY"}, "1–64 letters, digits"),
        ({"name": "alice", "public_key": "bm90IGEga2V5"}, "not an Ed25519 public key"),
        ({"name": "alice"}, "required in upload mode"),
        ({"name": "_admin", "public_key": "KEY"}, "reserved for the platform"),
        ({"name": "alice", "mode": "magic", "public_key": "KEY"}, "is not a valid choice"),
    ],
)
def test_bad_input_shows_the_form_again_and_nothing_reaches_the_ledger(owner, app, sim, alice_key, form, message):
    form = {k: (alice_key[1] if v == "KEY" else v) for k, v in form.items()}
    client = signed_in(owner)
    before, blocks = state(), len(sim.blocks)
    page = assert_page(post(client, users_url(app), form), 400)
    assert message in page and 'class="field-error"' in page
    assert f'value="{form["name"]}"' in page  # what was typed is kept
    assert state() == before and len(sim.blocks) == blocks


def test_a_duplicate_name_is_refused_on_the_form(owner, app, sim, carol):
    client = signed_in(owner)
    before = state()
    page = assert_page(post(client, users_url(app), {"name": "carol", "public_key": generate_key()[1]}), 409)
    assert "A user named &#x27;carol&#x27; already exists in this app." in page
    assert state() == before


def test_a_ledger_that_does_not_answer_keeps_the_user_pending_until_sent_again(owner, app, sim, alice_key):
    node = app.nodes.get()
    LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.UNHEALTHY)
    client = signed_in(owner)
    form = {"name": "alice", "mode": "upload", "public_key": alice_key[1]}
    page = assert_page(post(client, users_url(app), form), 503)
    assert "pending" in page and "send the same request again" in page
    assert AppUser.objects.get(name="alice").status == "pending" and "alice" not in sim.users
    LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.RUNNING)
    assert_redirect(post(client, users_url(app), form), users_url(app))
    assert AppUser.objects.get(name="alice").status == "active" and sim.users["alice"] == alice_key[1]


def test_another_tenants_app_and_users_are_not_found(owner, outsider, app, sim, carol, alice_key):
    client, owner_client = signed_in(outsider), signed_in(owner)
    before, blocks = state(), len(sim.blocks)
    assert_not_found(client.get(users_url(app)))
    assert_not_found(post(client, users_url(app), {"name": "mallory", "public_key": alice_key[1]}))
    assert_not_found(client.get(f"{users_url(app)}{carol.pk}/revoke/"))
    assert_not_found(post(client, f"{users_url(app)}{carol.pk}/revoke/"))
    assert_not_found(client.get(f"{users_url(app)}{carol.pk}/export/"))
    assert_not_found(post(client, f"{users_url(app)}{carol.pk}/export/"))
    assert_not_found(owner_client.get(f"/portal/apps/{uuid.uuid4()}/users/"))
    assert_not_found(owner_client.get("/portal/apps/not-an-id/users/"))
    assert_not_found(owner_client.get(f"{users_url(app)}{uuid.uuid4()}/revoke/"))
    assert state() == before and len(sim.blocks) == blocks


def test_writes_need_the_csrf_token(owner, app, sim, carol, alice_key):
    client = signed_in(owner)
    before, blocks = state(), len(sim.blocks)
    assert client.post(users_url(app), {"name": "alice", "public_key": alice_key[1]}).status_code == 403
    assert client.post(f"{users_url(app)}{carol.pk}/revoke/").status_code == 403
    assert client.post(f"{users_url(app)}{carol.pk}/export/").status_code == 403
    assert state() == before and len(sim.blocks) == blocks


def test_the_users_page_does_not_query_per_row(owner, app, sim):
    client = signed_in(owner)

    def add(n: int) -> None:
        start = AppUser.objects.count()
        for i in range(n):
            AppUser.objects.create(
                app=app, name=f"u{start + i}", public_key=generate_key()[1], status="active", created_by=owner.user
            )

    add(2)
    few = queries(client, users_url(app))
    add(10)
    assert queries(client, users_url(app)) == few


def test_the_app_page_links_its_users_and_webhooks(owner, app, sim):
    client = signed_in(owner)
    page = assert_page(client.get(f"/portal/apps/{app.pk}/"))
    assert f'href="{users_url(app)}"' in page and f'href="/portal/apps/{app.pk}/webhooks/"' in page
    users = assert_page(client.get(users_url(app)))
    assert f'href="/portal/apps/{app.pk}/"' in users  # and back

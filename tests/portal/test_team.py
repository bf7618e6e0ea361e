"""Members and roles (/portal/team/) and API tokens (/portal/tokens/), used as a person would:
through the forms, with CSRF, as the right and the wrong people."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.tenants.models import ApiToken, Membership, Role
from apps.tenants.services import token_issue
from tests.api.conftest import row_counts
from tests.factories import MembershipFactory
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

NEW_PASSWORD = "a-long-first-passphrase-7"


def roles() -> dict[str, str]:
    return dict(Membership.objects.values_list("user__username", "role"))


# --------------------------------------------------------------------------- members


def test_every_member_sees_the_team_of_their_tenant_only(owner, member, outsider):
    viewer = MembershipFactory(tenant=owner.tenant, role=Role.VIEWER, user__username="vera")
    page = assert_page(signed_in(viewer).get("/portal/team/"))
    assert "alice" in page and "bob" in page and "vera" in page
    assert "mallory" not in page  # the other tenant's member
    assert "Add a member" not in page and "Change role" not in page  # a viewer only reads
    assert "an admin or owner adds members" in page
    # The navigation: Team for everyone; Tokens and Billing only where the role reads them.
    assert 'href="/portal/team/"' in page and 'href="/portal/tokens/"' not in page and "/portal/billing/" not in page
    owner_page = assert_page(signed_in(owner).get("/portal/team/"))
    assert "Add a member" in owner_page and 'href="/portal/tokens/"' in owner_page
    assert 'for="id_username"' in owner_page and 'for="id_password"' in owner_page  # labelled inputs
    assert "Digital currency" not in owner_page  # not a bank, no wallet


def test_an_admin_adds_a_member_who_then_signs_in(owner):
    admin = MembershipFactory(tenant=owner.tenant, role=Role.ADMIN, user__username="ada")
    client = signed_in(admin)
    resp = post(
        client,
        "/portal/team/",
        {"username": "carol", "email": "carol@example.test", "role": "developer", "password": NEW_PASSWORD},
    )
    assert_redirect(resp, "/portal/team/")
    page = messages_of(client, "/portal/team/")
    assert "carol@acme is now developer" in page
    added = Membership.objects.get(user__username="carol@acme")
    assert added.tenant == owner.tenant and added.role == Role.DEVELOPER
    event = AuditEvent.objects.get(action="member.add")
    assert event.actor == admin.user and event.data["username"] == "carol@acme"
    assert NEW_PASSWORD not in audit_text() and NEW_PASSWORD not in page
    # The new member signs in with the name and password the admin chose.
    fresh = Client(enforce_csrf_checks=True)
    fresh.get("/portal/login/")
    resp = post(fresh, "/portal/login/", {"username": "carol@acme", "password": NEW_PASSWORD})
    assert_redirect(resp, "/portal/")
    assert "developer" in assert_page(fresh.get("/portal/"))


@pytest.mark.parametrize(
    ("form", "field_message"),
    [
        ({"username": "Not Valid!", "role": "developer", "password": NEW_PASSWORD}, "does not match"),
        ({"username": "dave", "role": "developer", "password": "12345678"}, "This password is too common"),
        ({"username": "dave", "role": "emperor", "password": NEW_PASSWORD}, "is not a valid choice"),
        ({"username": "dave", "email": "not-an-email", "role": "viewer", "password": NEW_PASSWORD}, "valid email"),
        ({"username": "", "role": "viewer", "password": NEW_PASSWORD}, "This field is required"),
    ],
)
def test_bad_input_shows_the_form_again_with_the_reason(owner, form, field_message):
    client = signed_in(owner)
    before = row_counts()
    resp = post(client, "/portal/team/", form)
    page = assert_page(resp, 400)
    assert field_message in page and 'class="field-error"' in page
    if form["username"]:
        assert f'value="{form["username"]}"' in page  # what was typed is kept…
    assert form["password"] not in page  # …but never the password
    assert row_counts() == before


def test_an_admin_cannot_make_or_touch_an_owner(owner, member):
    admin = MembershipFactory(tenant=owner.tenant, role=Role.ADMIN, user__username="ada")
    client = signed_in(admin)
    before = row_counts()
    resp = post(client, "/portal/team/", {"username": "boss", "role": "owner", "password": NEW_PASSWORD})
    assert "Only an owner can add another owner." in assert_page(resp, 403)
    resp = post(client, f"/portal/team/{owner.pk}/role/", {"role": "viewer"})
    assert_redirect(resp, "/portal/team/")
    assert "Only an owner can grant or take away the owner role." in messages_of(client, "/portal/team/")
    resp = post(client, f"/portal/team/{owner.pk}/remove/")
    assert "Only an owner can remove an owner." in messages_of(client, resp["Location"])
    assert roles()["alice"] == Role.OWNER and row_counts() == before


def test_the_last_owner_stays(owner):
    client = signed_in(owner)
    before = row_counts()
    resp = post(client, f"/portal/team/{owner.pk}/role/", {"role": "admin"})
    assert "A tenant must keep at least one owner." in messages_of(client, resp["Location"])
    resp = post(client, f"/portal/team/{owner.pk}/remove/")
    assert "A tenant must keep at least one owner." in messages_of(client, resp["Location"])
    assert roles()["alice"] == Role.OWNER and row_counts() == before


def test_an_owner_changes_a_role_and_removes_a_member(owner, member):
    token = token_issue(membership=member, name="bobs-script")
    client = signed_in(owner)
    resp = post(client, f"/portal/team/{member.pk}/role/", {"role": "viewer"})
    assert_redirect(resp, "/portal/team/")
    assert "bob is now viewer." in messages_of(client, "/portal/team/")
    assert roles()["bob"] == Role.VIEWER
    assert AuditEvent.objects.filter(action="member.role", data__to="viewer").count() == 1
    bad = post(client, f"/portal/team/{member.pk}/role/", {"role": "king"})
    assert "is not a valid choice" in messages_of(client, bad["Location"])
    assert roles()["bob"] == Role.VIEWER
    confirm = assert_page(client.get(f"/portal/team/{member.pk}/remove/"))
    assert "Remove bob?" in confirm and "their API tokens stop working" in confirm
    resp = post(client, f"/portal/team/{member.pk}/remove/")
    assert_redirect(resp, "/portal/team/")
    assert "bob" not in roles()
    assert api_status(token.secret) == 401
    assert get_user_model().objects.filter(username="bob").exists()  # the account is kept


def test_a_developer_cannot_change_the_team(owner, member):
    client = signed_in(member)
    before = row_counts()
    assert_role_refused(
        post(client, "/portal/team/", {"username": "x", "role": "viewer", "password": NEW_PASSWORD}), "admin"
    )
    assert_role_refused(post(client, f"/portal/team/{owner.pk}/role/", {"role": "viewer"}), "admin")
    assert_role_refused(client.get(f"/portal/team/{owner.pk}/remove/"), "admin")
    assert_role_refused(post(client, f"/portal/team/{owner.pk}/remove/"), "admin")
    assert row_counts() == before and roles()["alice"] == Role.OWNER


def test_another_tenants_member_is_not_found(owner, outsider):
    client = signed_in(owner)
    before = row_counts()
    assert_not_found(post(client, f"/portal/team/{outsider.pk}/role/", {"role": "viewer"}))
    assert_not_found(client.get(f"/portal/team/{outsider.pk}/remove/"))
    assert_not_found(post(client, f"/portal/team/{outsider.pk}/remove/"))
    assert_not_found(client.get("/portal/team/not-a-uuid/remove/"))
    assert row_counts() == before and roles()["mallory"] == Role.OWNER


def test_a_post_without_csrf_is_refused(owner, member):
    client = signed_in(owner)
    before = row_counts()
    form = {"username": "eve", "role": "viewer", "password": NEW_PASSWORD}
    assert client.post("/portal/team/", form).status_code == 403
    assert client.post(f"/portal/team/{member.pk}/role/", {"role": "viewer"}).status_code == 403
    assert client.post(f"/portal/team/{member.pk}/remove/").status_code == 403
    assert row_counts() == before and roles()["bob"] == Role.DEVELOPER


# --------------------------------------------------------------------------- tokens


def api_status(secret: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client.get("/api/v1/tenant").status_code


def test_a_token_secret_is_shown_once_and_works(owner):
    client = signed_in(owner)
    resp = post(client, "/portal/tokens/", {"name": "ci", "expires_in_days": "30"})
    page = assert_page(resp)
    assert resp["Cache-Control"] == "no-store"
    token = ApiToken.objects.get(name="ci")
    secret = page.split('id="secret" class="mono" readonly value="')[1].split('"')[0]
    assert secret.startswith("bsn_" + token.prefix) and "shown only this once" in page
    assert api_status(secret) == 200  # the secret on the page is the token's
    assert 29 <= (token.expires_at - token.created_at).days <= 30
    # Never again: not on the list, not in the audit log, not stored.
    listing = assert_page(client.get("/portal/tokens/"))
    assert "ci" in listing and f"bsn_{token.prefix}…" in listing and secret not in listing
    assert secret not in audit_text() and token.digest != secret
    assert AuditEvent.objects.filter(action="token.create", object_id=str(token.pk)).count() == 1


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"name": ""}, "This field is required."),
        ({"name": "x", "expires_in_days": "0"}, "greater than or equal to 1"),
        ({"name": "x", "expires_in_days": "soon"}, "A valid integer is required."),
        ({"name": "x" * 101}, "no more than 100 characters"),
    ],
)
def test_bad_token_input_shows_the_form_again(owner, form, message):
    client = signed_in(owner)
    before = row_counts()
    page = assert_page(post(client, "/portal/tokens/", form), 400)
    assert message in page and "bsn_" not in page.split("Create a token")[1]
    assert row_counts() == before


def test_tokens_list_prefix_owner_expiry_and_last_use_and_revoke(owner, member, outsider):
    mine = token_issue(membership=member, name="deploy-bot")
    ApiToken.objects.filter(pk=mine.token.pk).update(last_used_at=mine.token.created_at)
    theirs = token_issue(membership=outsider, name="their-secret-bot")
    client = signed_in(owner)
    page = assert_page(client.get("/portal/tokens/"))
    assert "deploy-bot" in page and "bob" in page and f"bsn_{mine.token.prefix}…" in page and "ago" in page
    assert "their-secret-bot" not in page
    confirm = assert_page(client.get(f"/portal/tokens/{mine.token.pk}/revoke/"))
    assert "Revoke token deploy-bot" in confirm
    assert_redirect(post(client, f"/portal/tokens/{mine.token.pk}/revoke/"), "/portal/tokens/")
    assert api_status(mine.secret) == 401
    assert "Token deploy-bot" in messages_of(client, "/portal/tokens/")  # the flash message, once
    assert "deploy-bot" not in assert_page(client.get("/portal/tokens/"))  # in use only…
    assert "deploy-bot" in assert_page(client.get("/portal/tokens/?all=1"))  # …unless asked
    # Another tenant's token: not found, and it still works.
    assert_not_found(client.get(f"/portal/tokens/{theirs.token.pk}/revoke/"))
    assert_not_found(post(client, f"/portal/tokens/{theirs.token.pk}/revoke/"))
    assert api_status(theirs.secret) == 200


def test_tokens_are_for_admins_as_in_the_api(owner, member):
    mine = token_issue(membership=owner, name="owner-token")
    client = signed_in(member)
    before = row_counts()
    assert_role_refused(client.get("/portal/tokens/"), "admin")
    assert_role_refused(post(client, "/portal/tokens/", {"name": "sneaky"}), "admin")
    assert_role_refused(post(client, f"/portal/tokens/{mine.token.pk}/revoke/"), "admin")
    assert row_counts() == before and api_status(mine.secret) == 200


def test_token_create_and_revoke_need_csrf(owner):
    mine = token_issue(membership=owner, name="keep-me")
    client = signed_in(owner)
    before = row_counts()
    assert client.post("/portal/tokens/", {"name": "no-csrf"}).status_code == 403
    assert client.post(f"/portal/tokens/{mine.token.pk}/revoke/").status_code == 403
    assert row_counts() == before and api_status(mine.secret) == 200


def test_team_and_tokens_pages_do_not_query_per_row(owner):
    client = signed_in(owner)

    def add(n: int) -> None:
        for _ in range(n):
            membership = MembershipFactory(tenant=owner.tenant, role=Role.DEVELOPER)
            token_issue(membership=membership, name="bot")

    add(2)
    few = queries(client, "/portal/team/"), queries(client, "/portal/tokens/")
    add(10)
    assert (queries(client, "/portal/team/"), queries(client, "/portal/tokens/")) == few


def test_sending_the_create_form_again_makes_no_second_token(owner):
    client = signed_in(owner)
    form_page = assert_page(client.get("/portal/tokens/"))
    form_id = form_page.split('name="form_id" value="')[1].split('"')[0]
    first = post(client, "/portal/tokens/", {"name": "once", "form_id": form_id})
    assert "shown only this once" in assert_page(first)
    again = post(client, "/portal/tokens/", {"name": "once", "form_id": form_id})  # the browser's "resend"
    page = assert_page(again, 409)
    assert "This token was already created" in page and "bsn_" not in page.split('id="main"')[1]
    assert ApiToken.objects.filter(name="once").count() == 1
    assert "shown only this once" in assert_page(post(client, "/portal/tokens/", {"name": "once"}))  # a new form
    assert ApiToken.objects.filter(name="once").count() == 2

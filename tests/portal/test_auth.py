"""Signing in and out of the portal, choosing a tenant, the API's lockout, and what a
stranger or a member of another tenant sees."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.audit.models import AuditEvent
from apps.tenants.models import Role
from tests.api.conftest import make_app
from tests.factories import MembershipFactory, TenantFactory
from tests.portal.conftest import PASSWORD, post, signed_in

pytestmark = pytest.mark.django_db


def _login_form(client: Client, username: str, password: str, **extra):
    client.get("/portal/login/")
    return post(client, "/portal/login/", {"username": username, "password": password, **extra})


def test_a_stranger_is_sent_to_sign_in_and_back_where_they_were_going():
    client = Client()
    resp = client.get("/portal/")
    assert resp.status_code == 302 and resp["Location"] == "/portal/login/?next=%2Fportal%2F"
    assert client.get("/").status_code == 302 and client.get("/")["Location"] == "/portal/"


def test_sign_in_lands_on_the_dashboard_with_the_tenant_named(owner):
    client = Client(enforce_csrf_checks=True)
    resp = _login_form(client, "alice", PASSWORD, next="/portal/")
    assert resp.status_code == 302 and resp["Location"] == "/portal/"
    page = client.get("/portal/")
    assert page.status_code == 200
    html = page.content.decode()
    assert owner.tenant.name in html and "owner" in html
    assert "No chain apps yet" in html  # the empty state says what to do next
    assert AuditEvent.objects.filter(action="portal.login", actor=owner.user).count() == 1


def test_a_next_outside_the_site_is_ignored(owner):
    client = Client(enforce_csrf_checks=True)
    resp = _login_form(client, "alice", PASSWORD, next="https://evil.example/steal")
    assert resp["Location"] == "/portal/"


def test_a_wrong_password_and_an_account_without_tenant_answer_alike(owner, django_user_model):
    django_user_model.objects.create_superuser("root", "r@example.test", "platform-operator-passphrase")
    wrong = _login_form(Client(enforce_csrf_checks=True), "alice", "not-it")
    tenantless = _login_form(Client(enforce_csrf_checks=True), "root", "platform-operator-passphrase")
    assert wrong.status_code == tenantless.status_code == 400
    message = b"do not match an account of an active tenant"
    assert message in wrong.content and message in tenantless.content
    assert b"superuser" not in tenantless.content.lower()


def test_the_login_throttle_of_the_api_applies(owner, settings):
    settings.AXES_FAILURE_LIMIT = 3
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR="203.0.113.9")
    statuses = [_login_form(client, "alice", f"guess-{i}").status_code for i in range(3)]
    assert statuses == [400, 400, 429]
    locked = _login_form(client, "alice", PASSWORD)  # the right password waits too
    assert locked.status_code == 429 and locked["Retry-After"]
    assert b"Too many failed sign-ins" in locked.content and b"<html" in locked.content
    # …and the API's log-in counts the same failures (one throttle, not two).
    api = Client(REMOTE_ADDR="203.0.113.9").post(
        "/api/v1/auth/login", {"username": "alice", "password": PASSWORD}, content_type="application/json"
    )
    assert api.status_code == 429


def test_a_post_without_the_csrf_token_is_refused(owner):
    client = Client(enforce_csrf_checks=True)
    client.get("/portal/login/")
    resp = client.post("/portal/login/", {"username": "alice", "password": PASSWORD})
    assert resp.status_code == 403
    assert "_auth_user_id" not in client.session


def test_sign_out_is_a_post_and_ends_the_session(owner_portal):
    assert owner_portal.get("/portal/logout/").status_code == 405
    resp = post(owner_portal, "/portal/logout/")
    assert resp.status_code == 302
    assert owner_portal.get("/portal/").status_code == 302


def test_a_member_of_two_tenants_chooses_and_switches(owner, member, regions):
    other = TenantFactory(slug="initech", name="Initech")
    MembershipFactory(tenant=other, user=owner.user, role=Role.VIEWER)
    make_app(member, "acme-app")
    client = Client(enforce_csrf_checks=True)
    resp = _login_form(client, "alice", PASSWORD)
    assert resp.status_code == 302 and resp["Location"].startswith("/portal/tenant/")
    assert client.get("/portal/").status_code == 302  # no tenant chosen yet
    post(client, "/portal/tenant/", {"tenant": "acme"})
    page = client.get("/portal/").content.decode()
    assert "acme-app" in page and "Switch tenant" in page
    post(client, "/portal/tenant/", {"tenant": "initech"})
    page = client.get("/portal/").content.decode()
    assert "Initech" in page and "acme-app" not in page and "viewer" in page


def test_a_tenant_one_is_not_a_member_of_cannot_be_chosen(owner, outsider):
    client = signed_in(owner)
    resp = post(client, "/portal/tenant/", {"tenant": outsider.tenant.slug})
    assert resp.status_code == 302
    page = client.get("/portal/").content.decode()
    assert outsider.tenant.name not in page and owner.tenant.name in page


def test_the_dashboard_shows_only_the_own_tenants_apps(owner, outsider, regions):
    make_app(owner, "mine")
    make_app(outsider, "theirs")
    page = signed_in(owner).get("/portal/").content.decode()
    assert "mine" in page and "theirs" not in page
    assert "cn-beijing" in page  # the node grid names the region
    assert "Ledger nodes" in page and "1 / " in page  # quota use


def test_pages_are_phone_ready_and_labelled(owner_portal):
    html = owner_portal.get("/portal/").content.decode()
    assert 'name="viewport"' in html and 'lang="en"' in html and 'href="#main"' in html
    login = Client().get("/portal/login/").content.decode()
    assert '<label for="id_username">' in login and 'id="id_username"' in login

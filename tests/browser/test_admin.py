"""The operators' Django admin in a real browser: its log-in (wrong password, the lockout,
the right one), its index with the project's models, and its own CSS and scripts loading
from the live server."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import axe_violations

OPERATOR_PASSWORD = "platform-operator-passphrase"


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.test", OPERATOR_PASSWORD)


def admin_log_in(page, username: str, password: str):
    page.goto("/admin/")
    page.wait_for_url(re.compile(r"/admin/login/\?next=/admin/$"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    return page


def test_the_admin_log_in_refuses_a_wrong_password_and_a_tenant_member(page, operator, owner):
    admin_log_in(page, "root", "not-it")
    note = page.locator(".errornote")
    assert "Please enter the correct username and password for a staff account" in note.inner_text()
    assert page.get_by_label("Username").input_value() == "root"
    # A tenant's owner is no operator: the same answer, no way in.
    admin_log_in(page, "alice", "correct-horse-battery")
    assert page.locator(".errornote").is_visible()
    page.goto("/admin/")
    assert "/admin/login/" in page.url


def test_the_admin_locks_out_after_n_failures(page, operator, watch, settings):
    settings.AXES_FAILURE_LIMIT = 2
    watch.allow(r"status of 429")
    admin_log_in(page, "root", "guess-1")
    with page.expect_response(lambda r: r.request.method == "POST" and "/admin/login/" in r.url) as second:
        admin_log_in(page, "root", "guess-2")
    assert second.value.status == 429 and second.value.headers["retry-after"]
    assert "Too many failed log-ins" in page.locator("body").inner_text()
    with page.expect_response(lambda r: r.request.method == "POST" and "/admin/login/" in r.url) as right:
        admin_log_in(page, "root", OPERATOR_PASSWORD)
    assert right.value.status == 429  # the right password waits out the cool-off too


def test_an_operator_logs_in_and_sees_the_index(page, operator):
    admin_log_in(page, "root", OPERATOR_PASSWORD)
    page.wait_for_url(re.compile(r"/admin/$"))
    assert page.get_by_role("heading", name="Platform administration").is_visible()
    assert page.get_by_role("link", name="Platform health dashboard").first.is_visible()
    # The admin's own stylesheet is served by the live server: its header is the admin's teal.
    header = page.locator("#header")
    assert header.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(65, 118, 144)"
    for model in ("Tenants", "Regions", "Chain apps", "Audit events"):
        assert page.get_by_role("link", name=model, exact=True).first.is_visible(), model
    page.locator("#content-main th a[href$='/tenants/tenant/']").click()  # the model, not the app
    page.wait_for_url(re.compile(r"/admin/tenants/tenant/$"))
    assert page.get_by_role("heading", level=1).inner_text().startswith("Select tenant")
    page.goto("/admin/")
    assert axe_violations(page) == []
    page.get_by_role("button", name="Log out").click()
    assert page.get_by_role("heading", name="Logged out").is_visible()

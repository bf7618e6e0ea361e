"""The portal in a real browser: CSS and htmx load, signing in (wrong password, lockout,
right password), the dashboard, switching tenant, signing out."""

from __future__ import annotations

import re

from apps.audit.models import AuditEvent
from apps.chainapps.models import ChainApp, LedgerNode
from apps.tenants.models import Role
from tests.api.conftest import make_app
from tests.browser.conftest import sign_in
from tests.factories import MembershipFactory, TenantFactory

# portal.css: --bg, the header's navy, and the badge colours (good / busy).
BG = "rgb(246, 248, 250)"
NAVY = "rgb(13, 40, 71)"
GOOD = ("rgb(17, 99, 41)", "rgb(218, 251, 225)")
BUSY = ("rgb(125, 78, 0)", "rgb(255, 248, 197)")


def posted_login(response) -> bool:
    return response.request.method == "POST" and response.url.endswith("/portal/login/")


def style(locator, prop: str) -> str:
    return locator.evaluate("(el, prop) => getComputedStyle(el).getPropertyValue(prop)", prop)


def test_the_stylesheet_and_htmx_load_from_the_live_server(signed_in_page):
    page = signed_in_page
    assert style(page.locator("body"), "background-color") == BG
    assert style(page.locator("header.top"), "background-color") == NAVY
    # htmx is loaded (deferred) and reads the CSRF header it sends from <body hx-headers>.
    page.wait_for_function("() => window.htmx !== undefined")
    assert page.evaluate("() => htmx.version") == "2.0.11"
    token = page.evaluate("() => JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']")
    assert len(token) >= 32
    # The fixture's watch fails the test on any console error or failed sub-request.


def test_a_wrong_password_says_so_next_to_a_labelled_form(page, owner, watch):
    watch.allow(r"status of 400")  # the refused form is a 400 page, as the API's log-in
    sign_in(page, "alice", "not-the-password", expect=None)
    alert = page.get_by_role("alert")
    assert alert.inner_text() == "That username and password do not match an account of an active tenant."
    assert style(alert, "color") == "rgb(164, 14, 38)"  # --bad
    username = page.get_by_label("Username")
    assert username.input_value() == "alice"  # not typed again
    assert page.get_by_label("Password").input_value() == ""  # never sent back
    # The field that has the focus is described by the message (a screen reader reads it).
    assert page.evaluate("() => document.activeElement.id") == "id_username"
    assert username.get_attribute("aria-describedby") == alert.get_attribute("id")
    assert "/portal/login/" in page.url and "_auth_user_id" not in str(page.context.cookies())


def test_after_n_failures_the_lockout_page_answers_even_the_right_password(page, owner, watch, settings):
    settings.AXES_FAILURE_LIMIT = 3
    watch.allow(r"status of 4(00|29)")
    for attempt in range(2):
        sign_in(page, "alice", f"guess-{attempt}", expect=None)
        assert page.get_by_role("alert").is_visible()
    with page.expect_response(posted_login) as third:
        sign_in(page, "alice", "guess-2", expect=None)
    assert third.value.status == 429 and int(third.value.headers["retry-after"]) > 0
    assert page.get_by_role("heading", level=1).inner_text() == "Too many failed sign-ins"
    assert "try again later" in page.get_by_role("alert").inner_text()
    with page.expect_response(posted_login) as right:
        sign_in(page, "alice", expect=None)
    assert right.value.status == 429
    page.goto("/portal/")
    assert "/portal/login/" in page.url  # still not signed in
    assert not AuditEvent.objects.filter(action="portal.login").exists()


def test_sign_in_shows_the_tenants_apps_with_status_badges_and_regions(desktop, owner, outsider, regions, no_broker):
    pending = make_app(owner, "ledger-pending", regions=("cn-beijing",))
    running = make_app(owner, "ledger-running", regions=("cn-beijing", "cn-shanghai"))
    # As a worker leaves it once the nodes answer (tests/integration runs real workers).
    ChainApp.objects.filter(pk=running.pk).update(status=ChainApp.Status.RUNNING)
    LedgerNode.objects.filter(app=running).update(state=LedgerNode.State.RUNNING)
    make_app(outsider, "globex-secret")
    assert len(no_broker) == 3  # the service enqueued each provision (ids only)

    page = sign_in(desktop.new_page(), "alice")
    assert page.get_by_role("heading", level=1).inner_text() == owner.tenant.name
    table = page.get_by_role("table")
    assert [c.inner_text() for c in table.locator("thead th").all()] == ["App", "Status", "cn-beijing", "cn-shanghai"]
    row = table.get_by_role("row").filter(has=page.get_by_role("rowheader", name="ledger-pending"))
    badge = row.locator("td").first.locator(".badge")
    assert badge.inner_text() == pending.status == "pending"
    assert (style(badge, "color"), style(badge, "background-color")) == BUSY
    row = table.get_by_role("row").filter(has=page.get_by_role("rowheader", name="ledger-running"))
    cells = row.locator("td .badge")
    assert [c.inner_text() for c in cells.all()] == ["running", "running", "running"]
    assert (style(cells.first, "color"), style(cells.first, "background-color")) == GOOD
    assert "globex-secret" not in page.content()
    ops = page.get_by_role("region", name="Recent operations")
    assert ops.get_by_text("provision of ledger-running").is_visible()
    quota = page.get_by_role("region", name="Quota use")
    assert quota.get_by_text(f"3 / {owner.tenant.max_nodes}").is_visible()  # 1 + 2 nodes


def test_an_empty_tenant_is_told_what_to_do_next(signed_in_page):
    assert signed_in_page.get_by_text("No chain apps yet").is_visible()
    assert signed_in_page.get_by_text("No operations yet").is_visible()


def test_a_member_of_two_tenants_chooses_then_switches(desktop, owner, regions):
    initech = TenantFactory(slug="initech", name="Initech")
    MembershipFactory(tenant=initech, user=owner.user, role=Role.VIEWER)
    make_app(owner, "acme-app")
    page = sign_in(desktop.new_page(), "alice", expect=r"/portal/tenant/")
    page.get_by_label(owner.tenant.name).check()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/portal/$"))
    assert page.get_by_role("rowheader", name="acme-app").is_visible()

    page.get_by_role("link", name="Switch tenant").click()
    page.get_by_label("Initech").check()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/portal/$"))
    assert page.get_by_role("status").inner_text() == "You now act for Initech as viewer."
    assert page.get_by_role("heading", level=1).inner_text() == "Initech"
    assert page.get_by_text("Initech · viewer").is_visible()
    assert "acme-app" not in page.content()
    # A viewer is told why there is no create button, not shown one that fails.
    assert page.get_by_text("Your role (viewer) can look but not create").is_visible()
    assert AuditEvent.objects.filter(action="portal.switch_tenant", actor=owner.user).count() == 2


def test_sign_out_ends_the_session(signed_in_page):
    page = signed_in_page
    page.get_by_role("button", name="Sign out alice").click()
    page.wait_for_url(re.compile(r"/portal/login/$"))
    assert page.get_by_role("status").inner_text() == "You are signed out."
    page.goto("/portal/")
    assert re.search(r"/portal/login/\?next=%2Fportal%2F$", page.url)
    # The back button shows nothing of the tenant either: the page is fetched again.
    assert page.get_by_role("heading", name="Sign in").is_visible()


def test_a_form_whose_csrf_cookie_is_gone_is_refused_and_signs_nobody_in(page, owner, watch):
    """Cookies cleared (or blocked) between loading the form and sending it: a 403 that says
    cookies are needed, and nobody is signed in."""
    watch.allow(r"status of 403")
    page.goto("/portal/login/")
    page.context.clear_cookies()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("correct-horse-battery")
    with page.expect_response(posted_login) as refused:
        page.get_by_role("button", name="Sign in").click()
    assert refused.value.status == 403
    assert "CSRF" in page.content() and "cookie" in page.locator("body").inner_text().lower()
    page.goto("/portal/")
    assert "/portal/login/" in page.url
    assert not AuditEvent.objects.filter(action="portal.login").exists()

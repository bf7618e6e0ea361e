"""The portal used without a mouse, on a phone, and checked by axe-core."""

from __future__ import annotations

import re

import pytest

from apps.chainapps.models import ChainApp, LedgerNode
from apps.tenants.models import Role
from tests.api.conftest import make_app
from tests.browser.conftest import axe_violations, horizontal_overflow, sign_in
from tests.factories import MembershipFactory, TenantFactory

FOCUSED = """() => {
    const el = document.activeElement;
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    return {
        tag: el.tagName.toLowerCase(), text: (el.innerText || el.value || '').trim(),
        in_header: !!el.closest('header'), in_nav: !!el.closest('nav'), in_main: !!el.closest('main'),
        visible: box.width > 0 && box.left >= 0 && box.top >= 0 && box.right <= window.innerWidth,
        outline: style.outlineStyle + ' ' + style.outlineWidth,
    };
}"""


@pytest.fixture
def busy_tenant(owner, regions):
    """Tenant A with apps on all three regions (the widest table the dashboard draws) and a
    second tenant for alice, so the header carries every link it can have."""
    for name, where in (
        ("trade-finance-letters-of-credit", ("cn-beijing", "cn-shanghai", "cn-shenzhen")),
        ("notary", ("cn-shanghai",)),
    ):
        app = make_app(owner, name, regions=where)
        ChainApp.objects.filter(pk=app.pk).update(status=ChainApp.Status.RUNNING)
        LedgerNode.objects.filter(app=app).update(state=LedgerNode.State.RUNNING)
    make_app(owner, "kv-store", regions=("cn-shenzhen",))  # still pending
    initech = TenantFactory(slug="initech", name="Initech")
    MembershipFactory(tenant=initech, user=owner.user, role=Role.VIEWER)
    return owner.tenant


def sign_in_as_acme(page):
    sign_in(page, "alice", expect=r"/portal/tenant/")
    return choose(page, "Acme")


def choose(page, tenant: str):
    page.get_by_label(tenant).check()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/portal/$"))
    return page


def tab_until(page, done, limit: int = 20) -> list[dict]:
    """Press Tab until ``done(focused)``; every element the focus visited, in order."""
    seen = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        seen.append(page.evaluate(FOCUSED))
        if done(seen[-1]):
            return seen
    raise AssertionError(f"not reached in {limit} presses of Tab: {seen}")


def test_tab_from_the_top_reaches_the_skip_link_the_nav_and_sign_out(desktop, busy_tenant):
    page = sign_in_as_acme(desktop.new_page())
    page.goto("/portal/")  # a fresh load: the focus starts at the top of the document
    visited = tab_until(page, lambda f: f["text"] == "Sign out alice")
    first = visited[0]
    assert first["text"] == "Skip to content" and first["visible"]  # shown once it has the focus
    texts = [f["text"] for f in visited]
    assert texts.index("Dashboard") < texts.index("Switch tenant") < texts.index("Sign out alice")
    assert visited[texts.index("Dashboard")]["in_nav"]
    # Every stop is visible and has the focus ring (3px solid, --focus), not the browser's default.
    for stop in visited:
        assert stop["visible"], stop
        assert stop["outline"] == "solid 3px", stop
    # Enter on the sign-out button signs out: no mouse needed.
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/portal/login/$"))
    assert page.get_by_role("status").inner_text() == "You are signed out."


def test_the_skip_link_jumps_over_the_header(desktop, busy_tenant):
    page = sign_in_as_acme(desktop.new_page())
    page.goto("/portal/")
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED)["text"] == "Skip to content"
    page.keyboard.press("Enter")
    # The jump is the browser's, after the key press returns: wait for it (bounded), a
    # loaded machine read the URL before it changed (fresh-clone CI, 5 December).
    page.wait_for_url(re.compile(r"#main$"), timeout=5000)
    page.keyboard.press("Tab")
    after = page.evaluate(FOCUSED)
    assert not after["in_header"], after  # the next stop is past the navigation


def test_signing_in_with_the_keyboard_only(page, owner):
    page.goto("/portal/login/")
    assert page.evaluate(FOCUSED)["tag"] == "input"  # the username field has the focus
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type("correct-horse-battery")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/portal/$"))
    assert page.get_by_role("heading", level=1).inner_text() == owner.tenant.name


@pytest.mark.parametrize("where", ["login", "dashboard", "choose-tenant"])
def test_nothing_overflows_a_phone_screen_but_scrolling_tables(phone, busy_tenant, where):
    page = phone.new_page()
    if where == "login":
        page.goto("/portal/login/")
    elif where == "dashboard":
        sign_in_as_acme(page)
    else:
        sign_in(page, "alice", expect=r"/portal/tenant/")
    measured = horizontal_overflow(page)
    assert measured["viewport"] == 375
    assert measured["scrollWidth"] <= measured["viewport"], measured
    assert measured["outside"] == [], measured
    if where == "dashboard":
        # The node grid is wider than a phone: it scrolls inside its box, the page does not.
        box = page.locator(".scroll").first
        inner, outer = box.evaluate("el => [el.scrollWidth, el.clientWidth]")
        assert outer <= 375 and inner >= outer
        assert page.get_by_role("rowheader", name="kv-store").is_visible()


def test_axe_finds_nothing_serious_on_the_login_page(page, owner, watch):
    page.goto("/portal/login/")
    assert axe_violations(page) == []
    watch.allow(r"status of 400")
    sign_in(page, "alice", "wrong", expect=None)  # the page with its error message
    assert page.get_by_role("alert").is_visible()
    assert axe_violations(page) == []


def test_axe_finds_nothing_serious_on_the_dashboard_and_tenant_choice(desktop, phone, busy_tenant):
    for context in (desktop, phone):
        page = sign_in(context.new_page(), "alice", expect=r"/portal/tenant/")
        assert axe_violations(page) == [], "choose tenant"
        choose(page, "Acme")
        assert page.get_by_role("rowheader", name="notary").is_visible()
        assert axe_violations(page) == [], f"dashboard, {page.viewport_size}"


def test_axe_finds_nothing_serious_on_an_empty_dashboard(signed_in_page):
    page = signed_in_page
    assert page.get_by_text("No chain apps yet").is_visible()
    assert axe_violations(page) == []


def test_the_axe_check_can_fail(page, live_server):
    """The harness itself: a page with known faults is reported (so a pass means something)."""
    page.goto("/portal/login/")
    page.evaluate(
        """() => {
        const main = document.querySelector('main');
        main.insertAdjacentHTML('beforeend',
            '<input id="nolabel"><p style="color:#ddd;background:#fff">faint</p><img src="/favicon.ico">');
    }"""
    )
    found = "\n".join(axe_violations(page))
    assert "label" in found and "color-contrast" in found and "image-alt" in found, found

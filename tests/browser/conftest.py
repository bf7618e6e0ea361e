"""Browser tests: Playwright for Python driving Debian's ``chromium`` against pytest-django's
``live_server`` (loopback; static files served by its ``StaticFilesHandler``, as
``StaticLiveServerTestCase`` does).

One browser for the whole ``tests/browser`` package, a fresh context (cookies, storage) per
test. Every page a test opens is watched: a console error, an uncaught script error, a
request that failed or a sub-resource (CSS, script, image) answered with 4xx/5xx fails the
test at teardown, unless the test said it expects it (``watch.allow(...)``).

How to add a test: docs/testing.md ("Browser tests").
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.models import Framework
from tests.conftest import require

VENDOR = Path(__file__).parent / "vendor"
AXE_JS = VENDOR / "axe-4.14.1.min.js"
PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 812}
TIMEOUT_MS = 10_000  # any single wait; a 2-core machine shared by four engineers is slow


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def pytest_collection_modifyitems(config, items):
    """Every test in this folder is a browser test (``pytest -m browser`` / ``-m "not browser"``)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="package")
def browser():
    """Debian's chromium, headless, launched once for the browser tests.

    Package scope, not session: Playwright's sync API runs its asyncio loop in this thread
    (in a greenlet), so while it is open Django sees "a running event loop" and refuses ORM
    calls from the test body (SynchronousOnlyOperation) although nothing here is async.
    ``DJANGO_ALLOW_ASYNC_UNSAFE`` lifts that check only while the browser is open: it is set
    here and removed when the last browser test of the package has run, so the rest of the
    suite keeps Django's protection.
    """
    path = chromium_path()
    require(path is not None, "Debian's chromium package (apt-get install chromium; `make services` installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(sync_playwright is not None, "the playwright package (`make venv` installs requirements.txt)")

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        # No browser download is possible here: Playwright drives the distribution's build.
        instance = playwright.chromium.launch(executable_path=path, headless=True)
        try:
            yield instance
        finally:
            instance.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(autouse=True)
def builtin_framework(transactional_db):
    # live_server tests run on a transactional database, flushed after each test (which
    # also removes migration data such as the built-in framework): put it back.
    return ensure_builtin_framework(Framework)


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    """Services enqueue work with ``transaction.on_commit``, which fires in these
    transactional tests: record the operation ids instead of sending them to Redis, where no
    worker of this run would ever take them (the portal shows the app as a worker left it:
    pending). The browser tests test pages, not provisioning (tests/integration does)."""
    sent: list[str] = []
    monkeypatch.setattr("apps.chainapps.tasks.enqueue_operation", sent.append)
    return sent


# Requests that fail for reasons outside the page; a server that refuses or breaks the
# connection, or answers 4xx/5xx for a sub-resource, still counts.
NOT_THE_PAGES_FAULT = (
    # The test moved on to the next page before the request finished (the favicon, mostly).
    "net::ERR_ABORTED",
    # Chromium cancels requests in flight when the host's network interfaces change: other
    # tests (and other runs on a shared machine) create and remove Docker bridges all along.
    "net::ERR_NETWORK_CHANGED",
)


@dataclass
class Watch:
    """What went wrong on a page that a person would not see in the test's assertions."""

    problems: list[str] = field(default_factory=list)
    allowed: list[re.Pattern] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Expect a problem matching ``pattern`` (a regex), e.g. ``r"status of 400"`` for a
        refused form: the browser logs a console error for every 4xx document too."""
        self.allowed.append(re.compile(pattern))

    def add(self, text: str) -> None:
        self.problems.append(text)

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(a.search(p) for a in self.allowed)]

    def attach(self, page) -> None:
        def console(message) -> None:
            if message.type == "error" and not any(e in message.text for e in NOT_THE_PAGES_FAULT):
                self.add(f"console error: {message.text} ({message.location})")

        page.on("console", console)
        page.on("pageerror", lambda exc: self.add(f"uncaught script error: {exc}"))

        def failed(request) -> None:
            if request.failure not in NOT_THE_PAGES_FAULT:
                self.add(f"request failed: {request.method} {request.url}: {request.failure}")

        page.on("requestfailed", failed)

        def response(resp) -> None:
            if resp.status >= 400 and resp.request.resource_type != "document":
                self.add(f"{resp.request.resource_type} {resp.url} answered {resp.status}")

        page.on("response", response)


@pytest.fixture
def watch() -> Watch:
    return Watch()


def _context(browser, live_server, watch: Watch, **options):
    context = browser.new_context(base_url=live_server.url, **options)
    context.set_default_timeout(TIMEOUT_MS)
    context.on("page", watch.attach)
    return context


@pytest.fixture
def desktop(browser, live_server, watch):
    """A desktop-sized browser context of its own (no cookies shared with other tests)."""
    context = _context(browser, live_server, watch, viewport=DESKTOP)
    yield context
    context.close()
    assert not watch.unexpected(), "\n".join(watch.unexpected())


@pytest.fixture
def phone(browser, live_server, watch):
    """A phone-sized context: 375×812 CSS pixels, touch, mobile layout viewport."""
    context = _context(
        browser, live_server, watch, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
    )
    yield context
    context.close()
    assert not watch.unexpected(), "\n".join(watch.unexpected())


@pytest.fixture
def page(desktop):
    """A desktop page, not signed in."""
    return desktop.new_page()


def sign_in(page, username: str, password: str = PASSWORD, *, expect: str | None = r"/portal/(\?.*)?$"):
    """Sign in through the form as a person does: labels, typing, the button."""
    page.goto("/portal/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    if expect:
        page.wait_for_url(re.compile(expect))
    else:
        page.wait_for_load_state()  # the answer (a refusal, a lockout) has loaded
    return page


@pytest.fixture
def signed_in_page(desktop, owner):
    """Tenant A's owner (alice), signed in through the form, on the dashboard."""
    return sign_in(desktop.new_page(), owner.user.username)


@pytest.fixture
def signed_in_phone(phone, owner):
    return sign_in(phone.new_page(), owner.user.username)


def axe_violations(page, *, impacts=("serious", "critical")) -> list[str]:
    """axe-core's violations of ``impacts`` on the page as it is now, one line each."""
    page.add_script_tag(path=str(AXE_JS))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    lines = []
    for v in result["violations"]:
        if v["impact"] in impacts:
            targets = ", ".join(" ".join(n["target"]) for n in v["nodes"][:5])
            lines.append(f"{v['impact']}: {v['id']} — {v['help']} — {targets}")
    return lines


OVERFLOW_JS = """() => {
    const width = window.innerWidth;
    const out = [];
    for (const el of document.body.querySelectorAll('*')) {
        if (el.closest('.scroll')) continue;
        const box = el.getBoundingClientRect();
        const outside = box.right > width + 1 || box.left < -1;
        // The skip link waits off-screen (position: absolute) until it has the focus.
        if (box.width && outside && getComputedStyle(el).position !== 'absolute') {
            const cls = typeof el.className === 'string' && el.className ? '.' + el.className : '';
            out.push(el.tagName.toLowerCase() + cls + ' right=' + Math.round(box.right));
        }
    }
    const scrollWidth = document.documentElement.scrollWidth;
    return {viewport: width, scrollWidth: scrollWidth, outside: out.slice(0, 10)};
}"""


def horizontal_overflow(page) -> dict:
    """How far the page scrolls sideways, and elements sticking out of the viewport that
    are not inside a ``.scroll`` box (tables may scroll inside one; nothing else may)."""
    return page.evaluate(OVERFLOW_JS)


@pytest.fixture
def screenshots_dir() -> Path:
    """Where a test run keeps its full-page screenshots, as artefacts of the run:
    ``$BSN_DATA_DIR/screenshots`` (``.data/test/screenshots/``, not tracked), or
    ``BSN_SCREENSHOTS_DIR`` (``make screenshots`` points it at ``docs/portal``)."""
    from django.conf import settings

    wanted = os.environ.get("BSN_SCREENSHOTS_DIR")
    path = Path(wanted) if wanted else Path(settings.DATA_DIR) / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path

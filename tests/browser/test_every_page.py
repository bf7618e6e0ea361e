"""Every portal page without a URL parameter, found from ``apps/portal/urls.py`` (so a page
merged later is checked without anyone writing this test again): as a signed-in owner of a
tenant with apps, on a desktop and on a phone, the page answers 200, has one ``<h1>``,
nothing serious for axe-core, nothing overflowing the phone's width but ``.scroll`` boxes,
and no console error or failed request (the ``watch`` fixture). A full-page screenshot of
each is kept in ``.data/test/screenshots/`` (the run's artefacts).

Pages with a parameter (an app's detail, …) need an object: their own tests call the same
helpers (``axe_violations``, ``horizontal_overflow``).
"""

from __future__ import annotations

import pytest
from django.urls import URLPattern, reverse

from apps.chainapps.models import ChainApp, LedgerNode
from apps.portal import urls as portal_urls
from tests.api.conftest import make_app
from tests.browser.conftest import axe_violations, horizontal_overflow, sign_in

# Not pages a signed-in member reads: signing in has its own tests (signed out), and
# signing out is a POST. A POST-only route without parameters goes here too, with why.
NOT_PAGES = {"login", "logout"}


def pages() -> list[str]:
    names = []
    for pattern in portal_urls.urlpatterns:
        if not isinstance(pattern, URLPattern) or pattern.name in NOT_PAGES or not pattern.name:
            continue
        if getattr(pattern.pattern, "converters", None) or getattr(pattern.pattern, "regex", None).groups:
            continue  # needs an object: tested by the page's own tests
        names.append(pattern.name)
    return names


@pytest.fixture
def tenant_with_apps(owner, regions):
    for name, where in (("trade-finance", ("cn-beijing", "cn-shanghai", "cn-shenzhen")), ("notary", ("cn-shanghai",))):
        app = make_app(owner, name, regions=where)
        ChainApp.objects.filter(pk=app.pk).update(status=ChainApp.Status.RUNNING)
        LedgerNode.objects.filter(app=app).update(state=LedgerNode.State.RUNNING)
    make_app(owner, "kv-store", regions=("cn-beijing",))
    return owner.tenant


def test_the_dashboard_and_tenant_choice_are_found():
    assert {"dashboard", "choose-tenant"} <= set(pages())


@pytest.mark.parametrize("name", pages())
def test_every_page_reads_well_on_desktop_and_phone(desktop, phone, tenant_with_apps, name, screenshots_dir):
    url = reverse(f"portal:{name}")
    for context in (desktop, phone):
        page = sign_in(context.new_page(), "alice")
        response = page.goto(url)
        assert response.status == 200, f"{url}: {response.status}"
        assert page.locator("h1").count() == 1, url
        assert axe_violations(page) == [], f"{url} at {page.viewport_size}"
        kind = "phone" if context is phone else "desktop"
        page.screenshot(path=screenshots_dir / f"page-{name}-{kind}.png", full_page=True)  # the run's artefacts
        if context is phone:
            measured = horizontal_overflow(page)
            assert measured["scrollWidth"] <= measured["viewport"] and not measured["outside"], (url, measured)

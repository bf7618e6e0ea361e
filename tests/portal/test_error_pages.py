"""Errors under /portal/ (and the console under /admin/) are pages a person can act on: a
500 with a reference to quote, a 404 with a way back, a refused form (CSRF) that says to
reload and try again. Every other path keeps the API's problem+json."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client, RequestFactory

from apps.portal import errors
from apps.portal.views.dashboard import DashboardView
from tests.api.conftest import row_counts
from tests.portal.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def _html(resp) -> str:
    return resp.content.decode()


def test_a_500_in_the_portal_is_a_page_with_a_reference_in_the_log(member_portal, monkeypatch, caplog):
    def boom(self, request):
        raise RuntimeError("a bug")

    monkeypatch.setattr(DashboardView, "get", boom)
    member_portal.raise_request_exception = False  # answer as a server does, not raise into the test
    with caplog.at_level(logging.ERROR, logger="apps.portal.errors"):
        resp = member_portal.get("/portal/")
    assert resp.status_code == 500 and resp["Content-Type"].startswith("text/html")
    html = _html(resp)
    assert "Something went wrong on our side" in html and 'href="/portal/"' in html
    ref = html.split('<code id="error-ref">')[1].split("</code>")[0]
    assert len(ref) >= 8 and any(ref in r.getMessage() and r.exc_info for r in caplog.records)
    assert "a bug" not in html  # no internals shown


@pytest.mark.parametrize(
    ("path", "html"),
    [("/portal/apps/", True), ("/admin/console/", True), ("/api/v1/apps", False), ("/healthz", False)],
)
def test_the_500_handler_answers_html_for_pages_and_a_problem_elsewhere(path, html):
    resp = errors.page_or_problem_500(RequestFactory().get(path))
    assert resp.status_code == 500
    if html:
        assert resp["Content-Type"].startswith("text/html") and 'id="error-ref"' in _html(resp)
    else:
        body = json.loads(resp.content)
        assert resp["Content-Type"] == "application/problem+json" and body["status"] == 500 and body["ref"]


def test_an_unknown_portal_path_is_the_portals_404_page(member_portal):
    resp = member_portal.get("/portal/no-such-page/")
    assert resp.status_code == 404 and resp["Content-Type"].startswith("text/html")
    assert "There is no page at /portal/no-such-page/" in _html(resp) and 'href="/portal/"' in _html(resp)


def test_an_unknown_api_path_is_still_a_problem_document(member_portal):
    resp = Client().get("/api/v1/no-such-thing")
    assert resp.status_code == 404 and resp["Content-Type"] == "application/problem+json"
    assert resp.json()["code"] == "not-found"


def test_a_form_without_its_csrf_token_is_a_page_that_says_to_reload(member_portal, regions):
    before = row_counts()
    resp = member_portal.post("/portal/apps/new/", {"name": "shop", "regions": ["cn-beijing"]})
    assert resp.status_code == 403 and resp["Content-Type"].startswith("text/html")
    html = _html(resp)
    assert "This form has expired" in html and "reload the page" in html and "nothing was changed" in html
    assert row_counts() == before


def test_signing_in_without_the_csrf_token_is_the_same_page(owner):
    client = Client(enforce_csrf_checks=True)
    resp = client.post("/portal/login/", {"username": owner.user.username, "password": PASSWORD})
    assert resp.status_code == 403 and "This form has expired" in _html(resp)
    assert "_auth_user_id" not in client.session


def test_outside_the_portal_a_csrf_failure_keeps_djangos_answer():
    resp = errors.csrf_failure(RequestFactory().post("/api/v1/auth/login"), reason="CSRF cookie not set.")
    assert resp.status_code == 403 and "This form has expired" not in _html(resp)

"""What the team, keys, webhooks and money tests assert about portal pages."""

from __future__ import annotations

import json

from apps.audit.models import AuditEvent


def html(resp) -> str:
    return resp.content.decode()


def assert_page(resp, status: int = 200) -> str:
    """A portal page (HTML, the base layout) with this status; its text."""
    assert resp.status_code == status, resp.content[:2000]
    assert resp["Content-Type"].startswith("text/html")
    text = html(resp)
    assert "<html" in text and 'id="main"' in text
    return text


def assert_not_found(resp) -> None:
    """The portal's "Not found" page: another tenant's object is not revealed."""
    text = assert_page(resp, 404)
    assert "There is nothing here, or it belongs to another tenant." in text


def assert_role_refused(resp, needed: str) -> None:
    text = assert_page(resp, 403)
    assert "Your role does not allow this" in text and f"this needs {needed} or above" in text


def assert_redirect(resp, to: str) -> None:
    assert resp.status_code == 302, resp.content[:2000]
    assert resp["Location"] == to, resp["Location"]


def messages_of(client, url: str) -> str:
    """The page at ``url`` (where a POST redirected), with its flash messages."""
    return assert_page(client.get(url))


def audit_text() -> str:
    """Every audit event as text: a secret must never be in it."""
    return json.dumps(list(AuditEvent.objects.values()), default=str)


def queries(client, url: str) -> int:
    """How many SQL queries rendering ``url`` takes (a list page's must not grow with its rows)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        assert_page(client.get(url))
    return len(ctx.captured_queries)

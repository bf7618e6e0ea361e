"""Helpers for the HTTP-level API tests: problem assertions, row counts, apps in a known state."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.chainapps.services import ChainAppSpec, chainapp_create
from apps.tenants.models import ApiToken, Membership

PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def builtin_framework(db):
    # A transactional test elsewhere in the run flushes migration data; put it back.
    return ensure_builtin_framework(Framework)


def assert_problem(resp, status: int, code: str | None = None) -> dict:
    """The response is an RFC 9457 problem with this status (and code, if given)."""
    assert resp.status_code == status, resp.content
    assert resp["Content-Type"].split(";")[0] == PROBLEM, resp["Content-Type"]
    body = resp.json()
    assert {"type", "title", "status", "detail", "code"} <= set(body), body
    assert body["status"] == status
    assert body["type"].endswith("/" + body["code"])
    assert body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def row_counts() -> dict[str, int]:
    """Counts of every table an API write can touch; compare before/after a refused request."""
    return {
        "apps": ChainApp.objects.count(),
        "nodes": LedgerNode.objects.count(),
        "operations": Operation.objects.count(),
        "audit": AuditEvent.objects.count(),
        "members": Membership.objects.count(),
        "tokens": ApiToken.objects.count(),
        "users": get_user_model().objects.count(),
    }


def make_app(membership, name: str, regions=("cn-beijing",), **extra) -> ChainApp:
    """An app created through the service (as the API does), its provision still pending."""
    spec = ChainAppSpec(name=name, framework="bsn-ledger", regions=list(regions), **extra)
    operation = chainapp_create(tenant=membership.tenant, actor=membership.user, spec=spec)
    return operation.app


def finish_open_operations(app_id) -> None:
    """What a worker would do: close the app's open operations (no Celery in these tests)."""
    now = timezone.now()
    Operation.objects.filter(app_id=app_id).open().update(status=Operation.Status.SUCCEEDED, finished_at=now)


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        resp = client.get(url)
    assert resp.status_code == 200, resp.content
    return len(ctx.captured_queries)


@pytest.fixture
def app_a(owner, regions) -> ChainApp:
    """Tenant A's app on two regions, provision finished (so start/stop are allowed)."""
    app = make_app(owner, "ledger-a", regions=("cn-beijing", "cn-shanghai"))
    finish_open_operations(app.pk)
    return app

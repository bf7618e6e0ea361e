"""Bad bodies through the real server (gunicorn as deployed), including chunked ones.

A chunked body has no Content-Length: Django's WSGI request used to read it as empty,
so an over-limit chunked body was never refused and a valid one was silently dropped.
"""

from __future__ import annotations

import http.client
import json
import os

import pytest
from django.conf import settings

from apps.tenants.models import ApiToken
from apps.tenants.services import token_issue
from tests.dcep.test_bank_concurrency import Gunicorn
from tests.factories import MembershipFactory
from tests.integration.conftest import _database_url

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


@pytest.fixture
def server(transactional_db, tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bsn.settings_test",
        "DATABASE_URL": _database_url(),
        "PYTHONUNBUFFERED": "1",
    }
    gunicorn = Gunicorn(tmp_path / "gunicorn.log", env, workers=1, threads=2).start()
    yield gunicorn
    gunicorn.stop()


def _chunked(server, path: str, body: bytes, token: str, chunk: int = 256 * 1024) -> tuple[int, str, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        parts = (body[i : i + chunk] for i in range(0, len(body), chunk))
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        conn.request("POST", path, body=parts, headers=headers, encode_chunked=True)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.getheader("Content-Type", ""), json.loads(data or b"{}")
    finally:
        conn.close()


def test_chunked_bodies_are_read_and_bounded(server):
    membership = MembershipFactory(role="owner")
    token = token_issue(membership=membership, name="t").secret
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    # A valid chunked body is read (no longer dropped as empty).
    status, _, body = _chunked(server, "/api/v1/tokens", json.dumps({"name": "chunked"}).encode(), token)
    assert status == 201, body
    assert ApiToken.objects.filter(name="chunked").exists()

    # Over the limit by one byte: 413, nothing created.
    over = json.dumps({"name": "x" * limit}).encode()[: limit + 1]
    for path in ("/api/v1/tokens", "/api/v1/apps", f"/api/v1/apps/{'0' * 8}-0000-0000-0000-{'0' * 12}/transactions"):
        status, content_type, body = _chunked(server, path, over, token)
        assert (status, content_type.split(";")[0], body["code"]) == (413, PROBLEM, "payload-too-large"), body
    # Too deep, chunked: 400.
    status, _, body = _chunked(server, "/api/v1/tokens", ("[" * 65 + "]" * 65).encode(), token)
    assert (status, body["code"]) == (400, "parse-error"), body
    assert ApiToken.objects.filter(membership=membership).count() == 2  # the issued one and "chunked"


def test_an_announced_over_limit_body_is_refused_before_it_is_sent(server):
    """Content-Length over the limit: the answer comes without the client sending a byte of it."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("POST", "/api/v1/tokens")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(limit + 1))
        conn.endheaders()  # headers only; no body follows
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert (resp.status, resp.getheader("Content-Type").split(";")[0]) == (413, PROBLEM)
    assert body["code"] == "payload-too-large"

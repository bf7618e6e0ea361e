"""Bad bodies are a clean 4xx on every route of the API and the gateway (issue 8, §7).

Walks the OpenAPI schema: an over-limit body of any content type is a 413 problem on
every route, before authentication or routing; JSON nested deeper than
BSN_MAX_JSON_DEPTH (64) is a 400 on every route that reads a body, and nothing of it is
stored or forwarded to a node. Chunked bodies through a real server:
tests/integration/test_bad_bodies_server.py.
"""

from __future__ import annotations

import json
import uuid

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.api.conftest import assert_problem, row_counts
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
]


def _operations() -> list[tuple[str, str, dict]]:
    schema = APIClient().get("/api/v1/schema?format=json").json()
    return [
        (method, path, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def nested(levels: int) -> str:
    """A JSON object whose "value" makes the whole body ``levels`` deep."""
    return '{"value": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


def test_an_over_limit_body_is_413_on_every_route_whatever_its_type(owner_client, app, sim):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    big = json.dumps({"value": "x" * limit}).encode()
    operations = _operations()
    assert len(operations) > 50
    anonymous = APIClient()
    before = row_counts()
    for method, path, _ in operations:
        url = path.replace("{app_id}", str(app.pk)).replace("{id}", str(app.pk))
        for name in ("{tx_id}", "{height}", "{contract}", "{key}", "{slug}", "{code}"):
            url = url.replace(name, "ab" * 32 if name == "{tx_id}" else "1")
        for content_type in CONTENT_TYPES:
            for client in (owner_client, anonymous):
                resp = client.generic(method.upper(), url, big, content_type=content_type)
                body = assert_problem(resp, 413, "payload-too-large")
                assert str(limit) in body["detail"], (method, url)
    assert row_counts() == before
    assert sim.blocks == [] and sim.nonces == set()


def test_a_body_at_the_limit_is_read(owner_client):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    name = "n" * (limit - len(json.dumps({"name": ""})))
    resp = owner_client.post("/api/v1/tokens", json.dumps({"name": name}), content_type="application/json")
    body = assert_problem(resp, 400, "invalid")  # read and validated (the name is too long), not a 413
    assert "name" in body["errors"]


def _depth_cases(app, owner) -> dict[tuple[str, str], str]:
    """Every non-DCEP route that reads a body, with a URL naming real objects.
    (DCEP routes: tests/dcep/test_api.py, test_bodies_too_deep_or_too_big_are_clean_4xx.)"""
    from apps.webhooks.services import webhook_create
    from tests.factories import custody_user

    user, _ = custody_user(app, "carol")
    sign = f"/api/v1/apps/{app.pk}/users/{user.pk}/transactions"
    hook, _ = webhook_create(app=app, actor=owner.user, url="https://hooks.example.com/h", events=["*"])
    return {
        ("put", "/api/v1/tenant/billing"): "/api/v1/tenant/billing",
        ("post", "/api/v1/billing/prices"): "/api/v1/billing/prices",
        ("post", "/api/v1/billing/months/close"): "/api/v1/billing/months/close",
        ("post", "/api/v1/apps/{app_id}/webhooks"): f"/api/v1/apps/{app.pk}/webhooks",
        ("patch", "/api/v1/apps/{app_id}/webhooks/{id}"): f"/api/v1/apps/{app.pk}/webhooks/{hook.pk}",
        ("post", "/api/v1/apps/{app_id}/users/{id}/transactions"): sign,
        ("post", "/api/v1/apps"): "/api/v1/apps",
        ("patch", "/api/v1/apps/{id}"): f"/api/v1/apps/{app.pk}",
        ("post", "/api/v1/apps/{id}/transactions"): f"/api/v1/apps/{app.pk}/transactions",
        ("post", "/api/v1/apps/{id}/upgrade"): f"/api/v1/apps/{app.pk}/upgrade",
        ("post", "/api/v1/apps/{id}/scale"): f"/api/v1/apps/{app.pk}/scale",
        ("post", "/api/v1/apps/{app_id}/users"): f"/api/v1/apps/{app.pk}/users",
        ("post", "/api/v1/auth/login"): "/api/v1/auth/login",
        ("patch", "/api/v1/tenant"): "/api/v1/tenant",
        ("post", "/api/v1/tenant/members"): "/api/v1/tenant/members",
        ("patch", "/api/v1/tenant/members/{id}"): f"/api/v1/tenant/members/{owner.pk}",
        ("post", "/api/v1/tokens"): "/api/v1/tokens",
    }


def test_json_nested_deeper_than_the_limit_is_400_on_every_route_that_reads_a_body(owner_client, owner, app, sim):
    limit = settings.BSN_MAX_JSON_DEPTH
    assert limit == 64
    cases = _depth_cases(app, owner)
    with_body = {(m, p) for m, p, op in _operations() if "requestBody" in op and "/dcep/" not in p}
    assert with_body == set(cases)  # a new route with a body must be added here
    # Platform staff's routes refuse anyone else before reading the body: walk them as staff.
    staff = MembershipFactory(user=UserFactory(username="ops-staff", is_staff=True))  # a member of some tenant
    staff_client = APIClient()
    staff_client.force_authenticate(staff.user)
    before = row_counts()
    for (method, _), url in cases.items():
        client = staff_client if url.startswith("/api/v1/billing/") else owner_client
        for levels in (limit + 1, 500, 100_000):
            resp = client.generic(method.upper(), url, nested(levels), content_type="application/json")
            body = assert_problem(resp, 400, "parse-error")
            assert f"nested deeper than {limit}" in body["detail"], (url, levels)
        # At the limit the body is parsed: whatever the route answers, it is not about nesting.
        resp = client.generic(method.upper(), url, nested(limit), content_type="application/json")
        assert resp.status_code < 500 and "nested" not in resp.content.decode(), (url, resp.content[:300])
    assert row_counts() == before
    assert sim.blocks == [] and sim.nonces == set()


def test_a_deep_transaction_never_reaches_a_node(owner_client, app, sim, alice, alice_key):
    """Through the gateway, a signed envelope whose args nest too deep: 400, the node sees nothing."""
    from bsn.ledger.tx import make_tx, sign_tx

    value: list = []
    for _ in range(70):
        value = [value]
    tx = make_tx(str(app.pk), "kv", "put", {"key": "deep", "value": value}, "alice", nonce=uuid.uuid4().hex)
    envelope = sign_tx(tx, alice_key[0])
    url = f"/api/v1/apps/{app.pk}/transactions"
    heights = len(sim.blocks)
    body = assert_problem(owner_client.post(url, envelope, format="json"), 400, "parse-error")
    assert "nested deeper than 64" in body["detail"]
    body = assert_problem(owner_client.post(url, {"txs": [envelope]}, format="json"), 400, "parse-error")
    assert len(sim.blocks) == heights and "deep" not in sim.kv


def test_a_committed_block_nested_too_deep_for_python_is_still_readable(owner_client, app):
    """Before nodes refused deep transactions, one nested ~975 levels could be committed;
    parsing its block raised RecursionError in the gateway (a 500, for good). The gateway
    now relays such an answer as it came."""
    from apps.chainapps.models import LedgerNode
    from tests.fakenode import FakeNode
    from tests.gateway.conftest import speak_as

    node = FakeNode()
    try:
        speak_as(node, app.nodes.get())  # the real node's credential and identity: the gateway believes it
        LedgerNode.objects.filter(app=app).update(state=LedgerNode.State.RUNNING, endpoint=node.endpoint)
        deep = b'{"header":{"height":1},"txs":[{"tx":{"args":' + b"[" * 5000 + b"]" * 5000 + b"}}]}"
        node.routes[("GET", "/blocks/1")] = (200, deep)
        node.routes[("GET", "/state/kv/k")] = (200, b'{"key":"k","value":' + b"[" * 5000 + b"]" * 5000 + b"}")
        resp = owner_client.get(f"/api/v1/apps/{app.pk}/blocks/1")
        assert resp.status_code == 200 and resp["Content-Type"] == "application/json"
        assert resp.content == deep
        resp = owner_client.get(f"/api/v1/apps/{app.pk}/state/kv/k")
        assert resp.status_code == 200 and resp.content.startswith(b'{"key":"k"')
        node.routes[("GET", "/blocks/2")] = (200, {"header": {"height": 2}, "txs": []})  # the usual path
        assert owner_client.get(f"/api/v1/apps/{app.pk}/blocks/2").json()["header"]["height"] == 2
    finally:
        node.close()

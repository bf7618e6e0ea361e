"""The OpenAPI schema of /api/v1/dcep/: valid, complete, and true to what the routes do.

Every write documents its Idempotency-Key header (required) and its problem responses, and
the routes that document the header really refuse a request without it; the one write that
takes no key (starting a settlement, idempotent by itself) documents none and needs none.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.dcep.helpers import created, funded_wallet, issue, money_state, open_wallet

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}

# Every DCEP write, and how to call it validly as the right party (so that only the missing
# key can be the reason for a refusal). A new write route fails the test until it is added.
WRITES = {
    ("post", "/api/v1/dcep/issuances"): ("cb", lambda o: {"operator": "bank-a", "amount": 1}),
    ("post", "/api/v1/dcep/withdrawals"): ("cb", lambda o: {"operator": "bank-a", "amount": 1}),
    ("post", "/api/v1/dcep/wallets"): ("a", lambda o: {"holder_name": "h", "tier": 2, "kind": "personal"}),
    ("patch", "/api/v1/dcep/wallets/{id}"): ("a", lambda o: {"tier": 3}),
    ("post", "/api/v1/dcep/exchanges"): ("a", lambda o: {"wallet": o["w2"], "amount": 1}),
    ("post", "/api/v1/dcep/redemptions"): ("a", lambda o: {"wallet": o["w1"], "amount": 1}),
    ("post", "/api/v1/dcep/payments"): ("a", lambda o: {"from_wallet": o["w1"], "to_wallet": o["w2"], "amount": 1}),
    ("post", "/api/v1/dcep/payments/batch"): (
        "a",
        lambda o: {"payments": [{"from_wallet": o["w1"], "to_wallet": o["w2"], "amount": 1}]},
    ),
    ("post", "/api/v1/dcep/holds"): (
        "a",
        lambda o: {"from_wallet": o["w1"], "to_wallet": o["w2"], "amount": 1, "expires_in_s": 60},
    ),
    ("post", "/api/v1/dcep/holds/{id}/capture"): ("a", lambda o: {"amount": 1}),
    ("post", "/api/v1/dcep/holds/{id}/void"): ("a", lambda o: None),
    ("post", "/api/v1/dcep/settlements"): ("cb", lambda o: None),
}
# Starting a settlement needs no key: a second start returns the open batch (docs/dcep.md).
NO_KEY = {("post", "/api/v1/dcep/settlements")}


def _schema() -> dict:
    return APIClient().get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()


def _dcep_operations(schema: dict) -> dict:
    return {
        (method, path): op
        for path, ops in schema["paths"].items()
        if path.startswith("/api/v1/dcep/")
        for method, op in ops.items()
    }


@pytest.mark.django_db
def test_schema_is_valid_and_has_no_warnings(tmp_path):
    # --validate: against the OpenAPI 3 JSON schema; --fail-on-warn: e.g. two components of one
    # name (the DCEP chain once showed the gateway's "Chain" fields) or unnamed enum clashes.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))


@pytest.mark.django_db
def test_every_dcep_write_documents_its_idempotency_key_and_problems():
    operations = _dcep_operations(_schema())
    writes = {route: op for route, op in operations.items() if route[0] in ("post", "put", "patch", "delete")}
    assert set(writes) == set(WRITES), "classify the new DCEP write in WRITES (and give it a key)"
    for (method, path), op in writes.items():
        headers = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "header"}
        if (method, path) in NO_KEY:
            assert "Idempotency-Key" not in headers, path
        else:
            key = headers["Idempotency-Key"]
            assert key["required"] is True, (path, key)
            assert key["schema"] == {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"}, path
            assert "1-255" in key["description"]
        responses = op["responses"]
        success = [code for code in responses if code.startswith("2")]
        assert len(success) == 1 and "application/json" in responses[success[0]]["content"], (path, success)
        # 404: a wallet or hold named in the path or the body that is not there or not yours.
        problems = {"400", "401", "403", "404", "409", "422", "500", "503"}
        for code in problems:
            assert responses[code]["content"] == PROBLEM, (method, path, code)
        assert problems | set(success) == set(responses), (path, sorted(responses))


@pytest.mark.django_db
def test_every_dcep_read_documents_its_problems():
    operations = _dcep_operations(_schema())
    reads = {route: op for route, op in operations.items() if route[0] == "get"}
    assert len(reads) == 12
    for (_, path), op in reads.items():
        responses = op["responses"]
        assert "application/json" in responses["200"]["content"], path
        problems = {"401", "403", "500"} | ({"404"} if "{" in path else set())
        if path.endswith("/proof"):
            problems.add("409")  # not-settled, not-anchored
        for code in problems:
            assert responses[code]["content"] == PROBLEM, (path, code)
        assert "422" not in responses, path  # an Idempotency-Key problem: writes only
    lists = [path for (_, path), op in reads.items() if op["operationId"].endswith("_list")]
    assert len(lists) == 5, lists
    for path in lists:
        names = {p["name"] for p in operations[("get", path)]["parameters"]}
        assert {"page", "page_size", "ordering"} <= names, path
    transfer_filters = {p["name"] for p in operations[("get", "/api/v1/dcep/transfers")]["parameters"]}
    assert {"wallet", "kind", "since", "until"} <= transfer_filters


@pytest.mark.django_db
def test_documented_key_is_really_required(tier1, clients):
    """The schema and the routes agree: a write documented with the key refuses a request without it."""
    cb, a = clients["cb"], clients["a"]
    issue(cb, "bank-a", 1_000_000)
    objects = {"w1": funded_wallet(a, 10_000), "w2": open_wallet(a)}
    place = WRITES[("post", "/api/v1/dcep/holds")][1]
    ids = {
        "wallets": objects["w2"],
        "capture": created(a.post("holds", place(objects)))["id"],
        "void": created(a.post("holds", place(objects)))["id"],
    }
    for (method, path), (who, body) in WRITES.items():
        client = clients[who]
        target = next((v for k, v in ids.items() if f"/{k}/" in f"{path}/"), "")
        url = path.replace("{id}", target).removeprefix("/api/v1/dcep/")
        before = money_state()
        resp = getattr(client, method)(url, body(objects), key=None)
        if (method, path) in NO_KEY:
            assert resp.status_code == 202, resp.content
            continue
        assert resp.status_code == 400 and resp.json()["code"] == "idempotency-key-required", (path, resp.content)
        assert money_state() == before, path
        assert getattr(client, method)(url, body(objects)).status_code in (200, 201), path  # and with one it works

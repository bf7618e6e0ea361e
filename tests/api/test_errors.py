"""One error format for every 4xx/5xx: RFC 9457 problem details, and the schema says so."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import RequestFactory
from rest_framework.test import APIClient

from apps.common.errors import api_server_error
from apps.tenants.models import Role
from tests.api.conftest import PROBLEM, assert_problem, row_counts


@pytest.mark.django_db
class TestEveryStatusIsAProblem:
    def test_400_validation_lists_fields(self, owner_client, regions):
        body = assert_problem(
            owner_client.post("/api/v1/apps", {"name": "", "regions": "x", "extra": 1}, format="json"), 400, "invalid"
        )
        assert body["title"] == "Invalid input"
        assert set(body["errors"]) == {"extra"}  # unknown fields are refused before anything else
        body = assert_problem(owner_client.post("/api/v1/apps", {"name": "", "regions": "x"}, format="json"), 400)
        assert set(body["errors"]) == {"name", "regions"}
        assert body["detail"].split(":")[0] in {"name", "regions"}
        assert body["instance"] == "/api/v1/apps"

    @pytest.mark.parametrize(
        "body",
        [
            {"name": "x", "regions": ["mars-1"]},  # refused by the service
            {"name": "x", "regions": ["cn-beijing"], "tps": 1},  # refused as an unknown field
            {"name": "", "regions": ["cn-beijing"]},  # refused by the serializer
        ],
        ids=["service", "unknown-field", "serializer"],
    )
    def test_400_errors_are_always_field_to_list_of_messages(self, owner_client, regions, body):
        errors = assert_problem(owner_client.post("/api/v1/apps", body, format="json"), 400, "invalid")["errors"]
        assert errors
        assert all(isinstance(messages, list) and messages for messages in errors.values()), errors
        assert all(isinstance(message, str) for messages in errors.values() for message in messages)

    def test_400_non_field_error(self, owner_client, regions):
        body = assert_problem(owner_client.post("/api/v1/apps", [1, 2], format="json"), 400, "invalid")
        assert list(body["errors"]) == ["non_field_errors"]
        assert body["detail"] == body["errors"]["non_field_errors"][0]

    def test_400_malformed_json(self, owner_client):
        body = assert_problem(
            owner_client.post("/api/v1/tokens", b"{not json", content_type="application/json"), 400, "parse-error"
        )
        assert "JSON" in body["detail"]

    def test_401(self, db):
        body = assert_problem(APIClient().get("/api/v1/apps"), 401, "not-authenticated")
        assert body["title"] == "Not authenticated"

    def test_403(self, client_with_role):
        body = assert_problem(client_with_role(Role.VIEWER).post("/api/v1/tokens", {"name": "x"}, format="json"), 403)
        assert body["code"] == "permission-denied"
        assert "role" in body["detail"]

    def test_404_in_a_view_and_for_unknown_routes(self, owner_client):
        in_view = assert_problem(owner_client.get(f"/api/v1/apps/{uuid.uuid4()}"), 404, "not-found")
        unknown = assert_problem(owner_client.get("/api/v1/no-such-thing"), 404, "not-found")
        assert unknown["instance"] == "/api/v1/no-such-thing"
        assert in_view["type"] == unknown["type"]

    def test_405(self, owner_client):
        assert_problem(owner_client.put("/api/v1/tenant", {}, format="json"), 405, "method-not-allowed")

    def test_406(self, owner_client):
        assert_problem(owner_client.get("/api/v1/apps", HTTP_ACCEPT="application/xml"), 406, "not-acceptable")

    def test_409(self, owner_client, owner):
        assert_problem(owner_client.delete(f"/api/v1/tenant/members/{owner.pk}"), 409, "conflict")

    def test_415(self, owner_client):
        assert_problem(owner_client.post("/api/v1/tokens", "name=x", content_type="text/plain"), 415)

    def test_500_inside_a_view_is_a_problem_without_internals(self, owner_client, regions, monkeypatch, caplog):
        def boom(**kwargs):
            raise RuntimeError("secret internal detail")

        monkeypatch.setattr("apps.chainapps.services.chainapp_create", boom)
        before = row_counts()
        resp = owner_client.post("/api/v1/apps", {"name": "x", "regions": ["cn-beijing"]}, format="json")
        body = assert_problem(resp, 500, "server-error")
        assert "secret" not in resp.content.decode()
        assert body["detail"] == "An unexpected error occurred."
        assert len(body["ref"]) == 12  # quoted by the tenant, found by staff in the log
        assert any(body["ref"] in r.getMessage() for r in caplog.records)
        assert row_counts() == before

    def test_500_outside_drf(self, caplog):
        try:
            raise RuntimeError("secret internal detail")
        except RuntimeError:  # Django calls handler500 while handling the exception
            resp = api_server_error(RequestFactory().get("/healthz"))
        assert (resp.status_code, resp["Content-Type"]) == (500, PROBLEM)
        body = json.loads(resp.content)
        assert "secret" not in resp.content.decode()
        assert any(body["ref"] in r.getMessage() and "secret" in r.exc_text for r in caplog.records if r.exc_text)


@pytest.mark.django_db
def test_schema_documents_problem_responses_everywhere(db):
    schema = APIClient().get("/api/v1/schema?format=json").json()
    problem = schema["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            errors = {code: r for code, r in operation["responses"].items() if code[0] in "45"}
            expected = {"400", "401", "403", "500"} if path.startswith("/api/v1/auth/login") else {"401", "403", "500"}
            assert expected <= set(errors), (method, path)
            if "{" in path:
                assert "404" in errors, (method, path)
            for code, response in errors.items():
                content = response["content"]
                assert list(content) == [PROBLEM], (method, path, code)
                assert content[PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}

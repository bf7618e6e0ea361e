"""/healthz, /readyz, the OpenAPI schema and the Swagger UI page."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.tenants.models import Role

# Every route the issue names (as the schema spells them), with its methods.
REQUIRED_OPERATIONS = {
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/logout"),
    ("get", "/api/v1/tenant"),
    ("get", "/api/v1/tenant/members/"),
    ("post", "/api/v1/tenant/members/"),
    ("patch", "/api/v1/tenant/members/{id}/"),
    ("delete", "/api/v1/tenant/members/{id}/"),
    ("get", "/api/v1/tokens/"),
    ("post", "/api/v1/tokens/"),
    ("delete", "/api/v1/tokens/{id}/"),
    ("get", "/api/v1/regions/"),
    ("get", "/api/v1/regions/{code}/"),
    ("get", "/api/v1/frameworks/"),
    ("get", "/api/v1/apps/"),
    ("post", "/api/v1/apps/"),
    ("get", "/api/v1/apps/{id}/"),
    ("patch", "/api/v1/apps/{id}/"),
    ("delete", "/api/v1/apps/{id}/"),
    ("post", "/api/v1/apps/{id}/start/"),
    ("post", "/api/v1/apps/{id}/stop/"),
    ("get", "/api/v1/apps/{id}/nodes/"),
    ("get", "/api/v1/operations/"),
    ("get", "/api/v1/operations/{id}/"),
    ("get", "/api/v1/audit-events/"),
}


def test_healthz_needs_nothing():
    resp = APIClient().get("/healthz")
    assert (resp.status_code, resp.json()) == (200, {"status": "ok"})


@pytest.mark.django_db
def test_readyz_checks_database_and_broker(redis_url):
    resp = APIClient().get("/readyz")
    assert resp.status_code == 200, resp.content
    assert resp.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


@pytest.mark.django_db
def test_readyz_is_503_when_the_broker_is_down(monkeypatch):
    from bsn.celery import app

    def unreachable(*args, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(app, "connection_for_write", unreachable)
    resp = APIClient().get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"] == {"database": "ok", "broker": "error: ConnectionRefusedError"}


@pytest.mark.django_db
class TestSchema:
    @pytest.mark.parametrize("how", ["query", "accept"])
    def test_openapi_3_json_without_credentials(self, how):
        client = APIClient()
        resp = (
            client.get("/api/v1/schema?format=json")
            if how == "query"
            else client.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
        )
        assert resp.status_code == 200
        schema = resp.json()
        assert schema["openapi"].startswith("3.")
        assert schema["info"]["title"] == "bsn API"
        assert schema["components"]["securitySchemes"]["tokenAuth"]["name"] == "Authorization"

    def test_yaml_by_default(self):
        resp = APIClient().get("/api/v1/schema")
        assert resp.status_code == 200
        assert resp.content.startswith(b"openapi: 3.")

    def test_every_required_route_is_documented(self):
        schema = APIClient().get("/api/v1/schema?format=json").json()
        documented = {(method, path) for path, ops in schema["paths"].items() for method in ops}
        assert REQUIRED_OPERATIONS <= documented, REQUIRED_OPERATIONS - documented
        create = schema["paths"]["/api/v1/apps/"]["post"]
        assert "202" in create["responses"]
        assert create["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/AppCreateInputRequest"
        }
        list_params = {p["name"] for p in schema["paths"]["/api/v1/apps/"]["get"]["parameters"]}
        assert {"page", "page_size", "name", "status", "region", "ordering", "include_deleted"} <= list_params
        login = schema["paths"]["/api/v1/auth/login"]["post"]
        assert login.get("security") in (None, [], [{}])  # no credentials needed to get one

    def test_every_list_is_paginated_and_filterable(self):
        schema = APIClient().get("/api/v1/schema?format=json").json()
        lists = [
            (path, ops["get"])
            for path, ops in schema["paths"].items()
            if "get" in ops and "{" not in path and path.endswith("/")
        ]
        # 7 of the platform, 5 of DCEP (institutions, wallets, holds, transfers, settlements), 2 of billing
        # (invoices, prices)
        assert len(lists) == 14
        for path, op in lists:
            names = {p["name"] for p in op.get("parameters", [])}
            assert {"page", "page_size", "ordering"} <= names, path
            assert names - {"page", "page_size", "ordering"}, f"{path} has no filters"
            assert "/Paginated" in str(op["responses"]["200"]), path

    def test_swagger_ui(self, client_with_role):
        resp = APIClient().get("/api/v1/docs")
        assert resp.status_code == 200
        assert b"swagger" in resp.content.lower()
        assert b"/api/v1/schema" in resp.content
        assert client_with_role(Role.VIEWER).get("/api/v1/docs").status_code == 200

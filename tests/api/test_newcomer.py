"""A newcomer's first minutes (issue 11): the API's front door and its contract's edges.

Each of these was found by trying the API as a new user or by schemathesis
(tests/contract): an index at /api/v1/, one spelling of every path, pages and filters
refused with a 400 that names the parameter, OPTIONS answering, strict inputs documented
as strict.
"""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from tests.api.conftest import assert_problem, make_app

pytestmark = pytest.mark.django_db


def test_the_api_root_is_an_index_of_the_api(client):
    resp = client.get("/api/v1/")
    assert resp.status_code == 200
    body = resp.json()
    assert body["schema"].endswith("/api/v1/schema") and body["docs"].endswith("/api/v1/docs")
    for name in ("apps", "regions", "tenant", "tokens", "operations", "dcep/wallets", "dcep/supply"):
        assert body["resources"][name].endswith(f"/api/v1/{name}"), name


@pytest.mark.parametrize("path", ["/api/v1/tenant", "/api/v1/tenant/", "/api/v1/dcep/supply/", "/api/v1/schema/"])
def test_every_path_answers_with_and_without_the_slash(owner_client, path):
    resp = owner_client.get(path)
    assert resp.status_code != 404, resp.content


def test_the_schema_writes_each_path_once_without_the_slash():
    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    assert paths and all(not p.endswith("/") for p in paths)
    assert "/api/v1/apps" in paths and "/api/v1/tenant" in paths


def test_pages_outside_the_range(owner_client, owner, regions):
    make_app(owner, "one")
    for page in ("abc", "0", "-1", "1.5"):
        assert_problem(owner_client.get(f"/api/v1/apps?page={page}"), 400, "invalid-page")
    past = owner_client.get("/api/v1/apps?page=7")
    assert past.status_code == 200
    assert past.json()["count"] == 1 and past.json()["results"] == [] and past.json()["next"] is None
    assert past.json()["previous"].endswith("page=1")
    for size in ("0", "201", "x"):
        body = assert_problem(owner_client.get(f"/api/v1/apps?page_size={size}"), 400, "invalid-page-size")
        assert "page_size" in body["errors"]
    assert owner_client.get("/api/v1/apps?page=last").status_code == 200


def test_typed_filters_refuse_what_their_type_does_not_allow(owner_client):
    for query in ("include_deleted=null", "include_deleted=1", "include_deleted=", "status=x&status=y"):
        body = assert_problem(owner_client.get(f"/api/v1/apps?{query}"), 400, "invalid-filter")
        assert set(body["errors"]) <= {"include_deleted", "status"}
    assert_problem(owner_client.get("/api/v1/operations?app="), 400, "invalid-filter")
    assert_problem(owner_client.get("/api/v1/dcep/wallets?tier=0.5"), 400, "invalid-filter")
    assert owner_client.get("/api/v1/apps?name=").status_code == 200  # text: "" means no filter
    assert owner_client.get("/api/v1/apps?include_deleted=true").status_code == 200


def test_options_points_to_the_schema(owner_client, owner, regions):
    app = make_app(owner, "opt")
    for path in (f"/api/v1/apps/{app.pk}/transactions", "/api/v1/dcep/issuances", "/api/v1/apps"):
        resp = owner_client.options(path)
        assert resp.status_code == 200, (path, resp.content)
        assert resp.json()["schema"].endswith("/api/v1/schema")


def test_text_fields_take_text_only(owner_client):
    body = assert_problem(owner_client.post("/api/v1/tokens", {"name": 7}, format="json"), 400, "invalid")
    assert body["errors"] == {"name": ["must be a string"]}


def test_strict_inputs_are_documented_as_strict():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema["components"]["schemas"]
    login = components["LoginInputRequest"]
    assert login["additionalProperties"] is False
    assert login["properties"]["username"]["minLength"] == 1
    assert "description" not in login  # not the base class's docstring
    patch = schema["paths"]["/api/v1/tenant/members/{id}"]["patch"]["requestBody"]["content"]["application/json"]
    member_update = components[patch["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert member_update["required"] == ["role"]

"""GET /api/v1/regions, /regions/{code}, /frameworks: platform-wide catalogues, read-only."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.regions.models import Region
from bsn.ledger.contracts import CONTRACTS
from tests.api.conftest import assert_problem, count_queries, make_app
from tests.factories import RegionFactory


@pytest.mark.django_db
class TestRegions:
    def test_list(self, member_client, regions):
        body = member_client.get("/api/v1/regions").json()
        assert body["count"] == 3
        assert [r["code"] for r in body["results"]] == ["cn-beijing", "cn-shanghai", "cn-shenzhen"]
        row = body["results"][0]
        assert row["status"] == "active"
        assert row["node_count"] == 0
        assert row["queue"] == "region.cn-beijing"
        for secret in ("docker_base_url", "tls_key_encrypted", "tls_cert_encrypted", "tls_ca_encrypted"):
            assert secret not in row

    def test_detail_counts_live_nodes_of_every_tenant(self, member_client, owner, outsider, regions):
        make_app(owner, "a1", regions=("cn-beijing", "cn-shanghai"))
        make_app(outsider, "b1", regions=("cn-beijing",))
        deleted = make_app(owner, "a2", regions=("cn-beijing",))
        member_client.delete(f"/api/v1/apps/{deleted.pk}")
        resp = member_client.get("/api/v1/regions/cn-beijing")
        assert resp.status_code == 200
        assert (resp.json()["code"], resp.json()["node_count"]) == ("cn-beijing", 2)
        assert "acme" not in resp.content.decode() and "globex" not in resp.content.decode()

    def test_warm_nodes_wanted_and_ready_beside_the_live_nodes(self, member_client, owner, regions):
        """``warm_ready`` counts ready warm nodes only, and its subquery does not multiply the
        node count (two counts over two joins would)."""
        from tests.factories import WarmNodeFactory

        make_app(owner, "a1", regions=("cn-beijing",))
        make_app(owner, "a2", regions=("cn-beijing",))
        region = Region.objects.get(code="cn-beijing")
        Region.objects.filter(pk=region.pk).update(warm_nodes=3)
        for state in ("ready", "ready", "creating"):
            WarmNodeFactory(region=region, state=state)
        row = member_client.get("/api/v1/regions/cn-beijing").json()
        assert (row["node_count"], row["warm_nodes"], row["warm_ready"]) == (2, 3, 2)
        other = member_client.get("/api/v1/regions/cn-shanghai").json()
        assert (other["node_count"], other["warm_nodes"], other["warm_ready"]) == (0, 0, 0)

    def test_unknown_region_is_404(self, member_client, regions):
        assert_problem(member_client.get("/api/v1/regions/mars-base-1"), 404)

    def test_filters(self, member_client, regions):
        Region.objects.filter(code="cn-shanghai").update(status=Region.Status.DRAINING)
        RegionFactory(code="de-frankfurt", country="DE")
        draining = member_client.get("/api/v1/regions", {"status": "draining"}).json()
        assert [r["code"] for r in draining["results"]] == ["cn-shanghai"]
        assert [r["code"] for r in member_client.get("/api/v1/regions", {"country": "DE"}).json()["results"]] == [
            "de-frankfurt"
        ]
        assert_problem(member_client.get("/api/v1/regions", {"status": "on-fire"}), 400)

    @pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
    def test_not_writable_by_any_tenant(self, owner_client, regions, method):
        path = "/api/v1/regions" if method == "post" else "/api/v1/regions/cn-beijing"
        resp = getattr(owner_client, method)(path, {"code": "cn-x", "status": "draining"}, format="json")
        assert_problem(resp, 405)
        assert Region.objects.get(code="cn-beijing").status == Region.Status.ACTIVE
        assert Region.objects.count() == 3

    def test_needs_authentication(self, regions):
        assert_problem(APIClient().get("/api/v1/regions"), 401)

    def test_list_query_count_does_not_grow_with_rows(self, member_client, regions):
        member_client.get("/api/v1/regions")
        few = count_queries(member_client, "/api/v1/regions")
        for n in range(8):
            RegionFactory(code=f"cn-extra-{n}")
        assert count_queries(member_client, "/api/v1/regions") == few


@pytest.mark.django_db
class TestFrameworks:
    def test_builtin_framework_is_listed(self, member_client):
        body = member_client.get("/api/v1/frameworks").json()
        slugs = [f["slug"] for f in body["results"]]
        assert "bsn-ledger" in slugs
        ledger = member_client.get("/api/v1/frameworks/bsn-ledger").json()
        assert ledger["builtin"] is True
        assert ledger["contract_templates"] == list(CONTRACTS)
        assert member_client.get("/api/v1/frameworks", {"builtin": "true"}).json()["count"] == 1

    def test_builtin_framework_offers_the_registry_not_its_stored_column(self, member_client, builtin_framework):
        # The built-in node is this code: a template registered after the row was written is offered.
        builtin_framework.contract_templates = ["kv"]
        builtin_framework.save()
        assert member_client.get("/api/v1/frameworks/bsn-ledger").json()["contract_templates"] == list(CONTRACTS)

    def test_inactive_and_unknown_frameworks_are_404(self, member_client, builtin_framework):
        builtin_framework.is_active = False
        builtin_framework.save()
        assert_problem(member_client.get("/api/v1/frameworks/bsn-ledger"), 404)
        assert_problem(member_client.get("/api/v1/frameworks/nope"), 404)

    @pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
    def test_not_writable(self, owner_client, method):
        path = "/api/v1/frameworks" if method == "post" else "/api/v1/frameworks/bsn-ledger"
        assert_problem(getattr(owner_client, method)(path, {"slug": "x"}, format="json"), 405)

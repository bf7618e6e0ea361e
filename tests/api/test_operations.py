"""GET /api/v1/operations and /operations/{id}: the jobs behind 202 responses."""

from __future__ import annotations

import uuid

import pytest

from apps.chainapps.models import Operation
from tests.api.conftest import assert_problem, count_queries, finish_open_operations, make_app

URL = "/api/v1/operations"


@pytest.mark.django_db
class TestOperations:
    def test_detail_shows_state_log_and_who(self, member_client, owner_client, regions):
        resp = owner_client.post("/api/v1/apps", {"name": "demo", "regions": ["cn-beijing"]}, format="json")
        op = member_client.get(resp["Location"])
        assert op.status_code == 200
        body = op.json()
        assert (body["kind"], body["status"], body["app"], body["created_by"]) == (
            "provision",
            "pending",
            resp.json()["app"],
            "alice",
        )
        assert body["attempts"] == 0
        assert body["log"][0]["message"] == "provision requested"
        assert body["url"] == resp["Location"]

    def test_list_and_filters(self, member_client, owner, regions):
        a = make_app(owner, "a")
        b = make_app(owner, "b")
        finish_open_operations(a.pk)
        member_client.post(f"/api/v1/apps/{a.pk}/stop")

        def kinds(**params):
            return sorted(row["kind"] for row in member_client.get(URL, params).json()["results"])

        assert kinds() == ["provision", "provision", "stop"]
        assert kinds(app=str(a.pk)) == ["provision", "stop"]
        assert kinds(app=str(b.pk)) == ["provision"]
        assert kinds(status="pending") == ["provision", "stop"]
        assert kinds(kind="stop") == ["stop"]
        assert kinds(app=str(uuid.uuid4())) == []
        assert_problem(member_client.get(URL, {"app": "not-a-uuid"}), 400, "invalid")
        assert_problem(member_client.get(URL, {"status": "exploded"}), 400, "invalid")
        page = member_client.get(URL, {"page_size": 2}).json()
        assert (page["count"], len(page["results"])) == (3, 2)
        newest_first = [row["kind"] for row in member_client.get(URL, {"ordering": "-created_at"}).json()["results"]]
        assert newest_first[0] == "stop"

    def test_unknown_operation_is_404(self, member_client):
        assert_problem(member_client.get(f"{URL}/{uuid.uuid4()}"), 404, "not-found")

    @pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
    def test_operations_are_read_only(self, owner_client, owner, regions, method):
        app = make_app(owner, "a")
        op = Operation.objects.get(app=app)
        path = URL if method == "post" else f"{URL}/{op.pk}"
        assert_problem(getattr(owner_client, method)(path, {"status": "succeeded"}, format="json"), 405)
        op.refresh_from_db()
        assert op.status == Operation.Status.PENDING

    def test_list_query_count_does_not_grow_with_rows(self, member_client, owner, regions):
        for n in range(2):
            make_app(owner, f"few-{n}")
        member_client.get(URL)
        few = count_queries(member_client, URL)
        for n in range(8):
            make_app(owner, f"many-{n}")
        assert member_client.get(URL).json()["count"] == 10
        assert count_queries(member_client, URL) == few

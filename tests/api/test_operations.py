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


@pytest.mark.django_db
class TestOperationStateMachine:
    """Every status change goes through Operation.move_to (TRANSITIONS); cancelling."""

    def test_cancel_a_pending_operation(self, member_client, owner, regions):
        from apps.audit.models import AuditEvent

        app = make_app(owner, "a")
        op = Operation.objects.get(app=app)
        resp = member_client.post(f"{URL}/{op.pk}/cancel")
        assert resp.status_code == 200, resp.content
        body = resp.json()
        assert (body["status"], body["last_error"]) == ("cancelled", "cancelled by bob")
        assert body["log"][-1]["message"] == "provision cancelled: cancelled by bob"
        assert AuditEvent.objects.filter(action="operation.cancel", object_id=str(op.pk)).exists()
        again = member_client.post(f"{URL}/{op.pk}/cancel")
        assert_problem(again, 409, "operation-finished")

    def test_who_may_cancel(self, client_with_role, outsider_client, owner, regions):
        app = make_app(owner, "a")
        op = Operation.objects.get(app=app)
        assert_problem(client_with_role("viewer").post(f"{URL}/{op.pk}/cancel"), 403)
        assert_problem(outsider_client.post(f"{URL}/{op.pk}/cancel"), 404, "not-found")
        op.refresh_from_db()
        assert op.status == Operation.Status.PENDING  # nothing changed

    def test_a_delete_cannot_be_cancelled(self, owner_client, owner, regions):
        app = make_app(owner, "a")
        finish_open_operations(app.pk)
        delete = owner_client.delete(f"/api/v1/apps/{app.pk}")
        assert delete.status_code == 202
        assert_problem(owner_client.post(f"{delete['Location']}/cancel"), 409, "operation-not-cancellable")

    def test_cancel_a_running_operation_stops_recording_its_steps(self, owner_client, owner, regions):
        from apps.chainapps import provisioning

        app = make_app(owner, "a", regions=("cn-beijing", "cn-shanghai", "cn-shenzhen"))
        op, why = provisioning.operation_claim(str(Operation.objects.get(app=app).pk))
        assert (op.status, why) == (Operation.Status.RUNNING, "")
        nodes = list(op.steps)
        assert provisioning._record_step(str(op.pk), nodes[0], provisioning.STEP_DONE, "done") == "done"
        assert owner_client.post(f"{URL}/{op.pk}/cancel").status_code == 200
        op.refresh_from_db()
        assert op.status == Operation.Status.CANCELLED
        assert [op.steps[n]["state"] for n in nodes] == ["done", "cancelled", "cancelled"]
        # A worker still busy with a step finds the operation over and records nothing.
        assert provisioning._record_step(str(op.pk), nodes[1], provisioning.STEP_DONE, "late") == "skipped"
        op.refresh_from_db()
        assert op.status == Operation.Status.CANCELLED and op.steps[nodes[1]]["state"] == "cancelled"

    def test_transitions_are_enforced_in_one_conditional_update(self, owner, regions):
        from apps.chainapps.models import InvalidTransition

        app = make_app(owner, "a")
        op = Operation.objects.get(app=app)
        stale_copy = Operation.objects.get(pk=op.pk)
        assert op.move_to(Operation.Status.RUNNING)
        # Another process moved it first: the stale copy changes nothing.
        assert stale_copy.move_to(Operation.Status.CANCELLED) is False
        assert Operation.objects.get(pk=op.pk).status == Operation.Status.RUNNING
        assert op.move_to(Operation.Status.SUCCEEDED)
        with pytest.raises(InvalidTransition):
            op.move_to(Operation.Status.RUNNING)  # a finished operation stays finished
        assert Operation.objects.get(pk=op.pk).status == Operation.Status.SUCCEEDED

    def test_claim_busy_exhausted_and_superseded(self, owner_client, owner, regions):
        from apps.chainapps import provisioning

        app = make_app(owner, "a")
        first = Operation.objects.get(app=app)
        assert provisioning.operation_claim(str(first.pk))[1] == ""
        # Busy: another operation of the same app waits while one runs.
        second = Operation.objects.create(tenant=app.tenant, app=app, kind=Operation.Kind.START)
        assert provisioning.operation_claim(str(second.pk)) == (None, "busy")
        assert Operation.objects.get(pk=second.pk).status == Operation.Status.PENDING
        first.refresh_from_db()
        assert first.move_to(Operation.Status.SUCCEEDED)
        # Exhausted: no attempts left ends it failed, with the reason.
        Operation.objects.filter(pk=second.pk).update(attempts=5, max_attempts=5, last_error="engine down")
        assert provisioning.operation_claim(str(second.pk)) == (None, "exhausted")
        second.refresh_from_db()
        assert second.status == Operation.Status.FAILED
        assert second.last_error == "gave up after 5 attempts: engine down"
        # Superseded: a delete cancels what was still pending.
        third = Operation.objects.create(tenant=app.tenant, app=app, kind=Operation.Kind.STOP)
        assert owner_client.delete(f"/api/v1/apps/{app.pk}").status_code == 202
        third.refresh_from_db()
        assert (third.status, third.last_error) == (Operation.Status.CANCELLED, "superseded by delete")

    def test_an_operation_that_gives_up_fails_the_app_with_its_reason(self, owner_client, owner, regions):
        from apps.chainapps import provisioning
        from apps.chainapps.models import ChainApp, LedgerNode

        app = make_app(owner, "a")
        op, _ = provisioning.operation_claim(str(Operation.objects.get(app=app).pk))
        node = next(iter(op.steps))
        provisioning.step_give_up(str(op.pk), node, "the region's engine refused the container")
        body = owner_client.get(f"/api/v1/apps/{app.pk}").json()
        assert (body["status"], body["status_reason"]) == ("failed", "the region's engine refused the container")
        # The reconciler finds the node healthy later: running again, the reason gone.
        LedgerNode.objects.filter(pk=node).update(state=LedgerNode.State.RUNNING)
        provisioning.app_refresh_status(ChainApp.objects.get(pk=app.pk))
        body = owner_client.get(f"/api/v1/apps/{app.pk}").json()
        assert (body["status"], body["status_reason"]) == ("running", "")

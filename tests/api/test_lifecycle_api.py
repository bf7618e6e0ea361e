"""Upgrade and scale through the API: what is accepted, what is refused (and why), and how
the operations are planned. No worker here: the steps are driven by hand where needed
(tests/integration/test_upgrade_scale.py runs them for real)."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.chainapps import provisioning
from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.chainapps.selectors import region_node_counts, tenant_usage
from apps.regions.models import Region
from tests.api.conftest import assert_problem, finish_open_operations, make_app, row_counts

pytestmark = pytest.mark.django_db


@pytest.fixture
def next_version(builtin_framework) -> Framework:
    """The next version of the built-in ledger: same family (name), another slug and version."""
    return Framework.objects.create(
        slug="bsn-ledger-next",
        name=builtin_framework.name,
        version="0.3.0",
        image=builtin_framework.image,
        contract_templates=["kv", "notary"],
    )


@pytest.fixture
def running_app(owner, regions) -> ChainApp:
    """Tenant A's app on cn-beijing and cn-shanghai, provisioned and running."""
    app = make_app(owner, "ledger", regions=("cn-beijing", "cn-shanghai"))
    finish_open_operations(app.pk)
    ChainApp.objects.filter(pk=app.pk).update(status=ChainApp.Status.RUNNING)
    app.nodes.update(state=LedgerNode.State.RUNNING)
    return app


def upgrade(client, app, framework):
    return client.post(f"/api/v1/apps/{app.pk}/upgrade", {"framework": framework}, format="json")


def scale(client, app, regions, **extra):
    return client.post(f"/api/v1/apps/{app.pk}/scale", {"regions": regions, **extra}, format="json")


def accepted(resp, kind: str) -> Operation:
    assert resp.status_code == 202, resp.content
    body = resp.json()
    assert (body["kind"], body["status"]) == (kind, "pending")
    assert resp["Location"] == body["url"]
    return Operation.objects.get(pk=body["id"])


class TestUpgradeRequest:
    def test_accepted_recorded_audited_and_enqueued(
        self, owner_client, running_app, next_version, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            op = accepted(upgrade(owner_client, running_app, "bsn-ledger-next"), "upgrade")
        assert len(callbacks) == 1
        assert op.params == {"framework": "bsn-ledger-next", "version": "0.3.0", "from": "bsn-ledger"}
        event = AuditEvent.objects.get(action="app.upgrade")
        assert event.object_id == str(running_app.pk)
        assert event.data["operation"] == str(op.pk) and event.data["framework"] == "bsn-ledger-next"
        # Nothing moves before the worker does: the app and its nodes still run the old version.
        assert ChainApp.objects.get(pk=running_app.pk).framework.slug == "bsn-ledger"
        assert {n.current_framework.slug for n in running_app.nodes.all()} == {"bsn-ledger"}

    def test_the_framework_may_be_named_name_colon_version(self, owner_client, running_app, next_version):
        op = accepted(upgrade(owner_client, running_app, f"{next_version.name}:0.3.0"), "upgrade")
        assert op.params["framework"] == "bsn-ledger-next"

    @pytest.mark.parametrize("ref", ["no-such-framework", "bsn ledger node:9.9.9", ""])
    def test_unknown_framework_is_a_400(self, owner_client, running_app, ref):
        before = row_counts()
        resp = upgrade(owner_client, running_app, ref)
        assert_problem(resp, 400, "invalid")
        assert row_counts() == before

    def test_inactive_framework_is_unknown(self, owner_client, running_app, next_version):
        Framework.objects.filter(pk=next_version.pk).update(is_active=False)
        assert_problem(upgrade(owner_client, running_app, "bsn-ledger-next"), 400, "invalid")

    def test_another_ledger_family_is_refused(self, owner_client, running_app):
        Framework.objects.create(slug="fabric-peer", name="hyperledger fabric peer", version="2.5", image="x/y:1")
        body = assert_problem(upgrade(owner_client, running_app, "fabric-peer"), 409, "framework-incompatible")
        assert "family" in body["detail"]

    def test_a_version_without_the_apps_contract_is_refused(self, owner, owner_client, regions, next_version):
        app = make_app(owner, "assets", contract_template="asset", contract_params={"issuer": "acme"})
        finish_open_operations(app.pk)
        body = assert_problem(upgrade(owner_client, app, "bsn-ledger-next"), 409, "framework-incompatible")
        assert "asset" in body["detail"]

    def test_the_current_framework_is_refused(self, owner_client, running_app):
        assert_problem(upgrade(owner_client, running_app, "bsn-ledger"), 409, "framework-unchanged")

    def test_back_to_the_apps_framework_after_a_partial_upgrade_is_accepted(
        self, owner_client, running_app, next_version
    ):
        # A failed upgrade left one node on the new version: going back moves that node.
        node = running_app.nodes.order_by("region__code").first()
        LedgerNode.objects.filter(pk=node.pk).update(framework=next_version)
        accepted(upgrade(owner_client, running_app, "bsn-ledger"), "upgrade")

    def test_refused_while_another_operation_is_open(self, owner_client, running_app, next_version):
        owner_client.post(f"/api/v1/apps/{running_app.pk}/stop")
        assert_problem(upgrade(owner_client, running_app, "bsn-ledger-next"), 409, "operation-in-progress")

    def test_refused_when_the_app_is_stopped(self, owner_client, running_app, next_version):
        owner_client.post(f"/api/v1/apps/{running_app.pk}/stop")
        finish_open_operations(running_app.pk)
        before = row_counts()
        body = assert_problem(upgrade(owner_client, running_app, "bsn-ledger-next"), 409, "app-not-running")
        assert "start it" in body["detail"]
        assert row_counts() == before

    def test_refused_when_the_app_is_deleted(self, owner_client, running_app, next_version):
        owner_client.delete(f"/api/v1/apps/{running_app.pk}")
        finish_open_operations(running_app.pk)
        assert_problem(upgrade(owner_client, running_app, "bsn-ledger-next"), 409, "app-deleted")

    def test_a_viewer_may_not(self, client_with_role, running_app, next_version):
        assert_problem(upgrade(client_with_role("viewer"), running_app, "bsn-ledger-next"), 403, "permission-denied")

    def test_unknown_body_fields_are_refused(self, owner_client, running_app, next_version):
        resp = owner_client.post(
            f"/api/v1/apps/{running_app.pk}/upgrade", {"framework": "bsn-ledger-next", "force": True}, format="json"
        )
        assert_problem(resp, 400, "invalid")


class TestUpgradePlan:
    def test_one_node_at_a_time_in_region_order(self, owner_client, running_app, next_version):
        op = accepted(upgrade(owner_client, running_app, "bsn-ledger-next"), "upgrade")
        claimed, why = provisioning.operation_claim(str(op.pk))
        assert claimed is not None, why
        by_region = {n.region.code: str(n.pk) for n in running_app.nodes.select_related("region")}
        steps = claimed.steps
        assert steps[by_region["cn-beijing"]]["order"] == 0
        assert steps[by_region["cn-shanghai"]]["order"] == 1
        assert {s["action"] for s in steps.values()} == {"upgrade"}
        # Only the first node is sent to a worker.
        assert [str(n.pk) for n in provisioning.pending_steps(claimed)] == [by_region["cn-beijing"]]

    def test_the_next_node_is_sent_when_one_is_done(
        self, owner_client, running_app, next_version, django_capture_on_commit_callbacks, monkeypatch
    ):
        sent = []
        monkeypatch.setattr("apps.chainapps.tasks.dispatch_steps", lambda op_id, ids: sent.append(ids))
        op = accepted(upgrade(owner_client, running_app, "bsn-ledger-next"), "upgrade")
        assert provisioning.operation_claim(str(op.pk))[0] is not None
        first, second = (str(n.pk) for n in running_app.nodes.order_by("region__code"))
        with django_capture_on_commit_callbacks(execute=True):
            assert provisioning._record_step(str(op.pk), first, provisioning.STEP_DONE, "cn-beijing: back") == "done"
        assert sent == [[second]]
        with django_capture_on_commit_callbacks(execute=True):
            provisioning._record_step(str(op.pk), second, provisioning.STEP_DONE, "cn-shanghai: back")
        assert sent == [[second]]  # nothing after the last
        op.refresh_from_db()
        assert op.status == "succeeded"
        assert ChainApp.objects.get(pk=running_app.pk).framework == next_version  # all nodes moved

    def test_a_node_that_does_not_come_back_stops_the_upgrade(self, owner_client, running_app, next_version):
        op = accepted(upgrade(owner_client, running_app, "bsn-ledger-next"), "upgrade")
        provisioning.operation_claim(str(op.pk))
        first, second = running_app.nodes.order_by("region__code")
        LedgerNode.objects.filter(pk=first.pk).update(framework=next_version, state=LedgerNode.State.STOPPED)
        reason = f"cn-beijing: starting the node failed: node {first.name} did not come back within 300 s"
        provisioning.step_give_up(str(op.pk), str(first.pk), reason)
        op.refresh_from_db()
        assert op.status == "failed"
        assert reason in op.last_error
        assert op.steps[str(second.pk)]["state"] == "skipped"
        assert op.steps[str(second.pk)]["error"].startswith("not started")
        app = ChainApp.objects.get(pk=running_app.pk)
        assert app.framework.slug == "bsn-ledger"  # the app's framework stays the old one
        assert app.status == "degraded"  # one node still serves
        nodes = owner_client.get(f"/api/v1/apps/{app.pk}/nodes").json()["results"]
        assert {n["region"]: n["framework"] for n in nodes} == {
            "cn-beijing": "bsn-ledger-next",
            "cn-shanghai": "bsn-ledger",
        }


class TestScaleRequest:
    def test_adding_a_region_writes_a_node_and_a_scale_operation(self, owner_client, running_app, regions):
        op = accepted(scale(owner_client, running_app, ["cn-beijing", "cn-shanghai", "cn-shenzhen"]), "scale")
        assert op.params == {
            "regions": ["cn-beijing", "cn-shanghai", "cn-shenzhen"],
            "added": ["cn-shenzhen"],
            "removed": [],
            "keep_data": True,
        }
        new = LedgerNode.objects.get(app=running_app, region__code="cn-shenzhen")
        assert new.state == "pending" and new.framework == running_app.framework
        assert new.public_key and new.private_key_encrypted and new.api_credential_encrypted
        assert AuditEvent.objects.get(action="app.scale").data["added"] == ["cn-shenzhen"]
        app = owner_client.get(f"/api/v1/apps/{running_app.pk}").json()
        assert app["regions"] == ["cn-beijing", "cn-shanghai", "cn-shenzhen"]

    def test_the_plan_refreshes_kept_nodes_then_adds_then_removes(self, owner_client, running_app):
        op = accepted(scale(owner_client, running_app, ["cn-shanghai", "cn-shenzhen"]), "scale")
        claimed, _ = provisioning.operation_claim(str(op.pk))
        by_region = {n.region.code: str(n.pk) for n in running_app.nodes.select_related("region")}
        plan = {code: (claimed.steps[i]["order"], claimed.steps[i]["action"]) for code, i in by_region.items()}
        assert plan == {"cn-shanghai": (0, "refresh"), "cn-shenzhen": (1, "add"), "cn-beijing": (2, "remove")}

    def test_only_removing_restarts_nobody(self, owner_client, running_app):
        op = accepted(scale(owner_client, running_app, ["cn-shanghai"], keep_data=False), "scale")
        assert op.params["keep_data"] is False
        claimed, _ = provisioning.operation_claim(str(op.pk))
        assert [(s["order"], s["action"]) for s in claimed.steps.values()] == [(0, "remove")]

    def test_a_region_scaled_away_comes_back_as_the_same_node(self, owner_client, running_app):
        gone = LedgerNode.objects.get(app=running_app, region__code="cn-shanghai")
        LedgerNode.objects.filter(pk=gone.pk).update(state=LedgerNode.State.REMOVED, endpoint="")
        assert owner_client.get(f"/api/v1/apps/{running_app.pk}").json()["regions"] == ["cn-beijing"]
        accepted(scale(owner_client, running_app, ["cn-beijing", "cn-shanghai"]), "scale")
        back = LedgerNode.objects.get(app=running_app, region__code="cn-shanghai")
        assert back.pk == gone.pk and back.public_key == gone.public_key  # its key, its kept volume
        assert (back.state, back.generation) == ("pending", gone.generation + 1)

    def test_removed_nodes_free_quota_and_capacity(self, owner, running_app):
        region = Region.objects.get(code="cn-shanghai")
        assert tenant_usage(tenant=owner.tenant)["nodes"] == 2
        assert region_node_counts()[region.pk] == 1
        LedgerNode.objects.filter(app=running_app, region=region).update(state=LedgerNode.State.REMOVED)
        assert tenant_usage(tenant=owner.tenant)["nodes"] == 1
        assert region.pk not in region_node_counts()

    @pytest.mark.parametrize(
        ("codes", "detail"),
        [
            ([], "region"),
            (["cn-beijing", "cn-beijing"], "only once"),
            (["cn-beijing", "cn-nowhere"], "unknown region"),
            (["cn-shenzhen"], "keep at least one"),
        ],
    )
    def test_bad_region_lists_are_400(self, owner_client, running_app, codes, detail):
        before = row_counts()
        body = assert_problem(scale(owner_client, running_app, codes), 400, "invalid")
        assert detail in str(body)
        assert row_counts() == before

    def test_the_same_regions_are_a_409(self, owner_client, running_app):
        assert_problem(scale(owner_client, running_app, ["cn-shanghai", "cn-beijing"]), 409, "regions-unchanged")

    def test_a_draining_region_takes_no_new_node(self, owner_client, running_app):
        Region.objects.filter(code="cn-shenzhen").update(status=Region.Status.DRAINING)
        before = row_counts()
        body = assert_problem(
            scale(owner_client, running_app, ["cn-beijing", "cn-shenzhen"]), 409, "region-unavailable"
        )
        assert "cn-shenzhen is draining" in body["detail"]
        assert row_counts() == before

    def test_a_kept_region_may_be_draining(self, owner_client, running_app):
        # Draining stops new nodes, not the ones there: removing a node elsewhere is fine.
        Region.objects.filter(code="cn-beijing").update(status=Region.Status.DRAINING)
        accepted(scale(owner_client, running_app, ["cn-beijing"]), "scale")

    def test_a_full_region_is_a_409(self, owner_client, running_app):
        Region.objects.filter(code="cn-shenzhen").update(max_nodes=0)
        assert_problem(scale(owner_client, running_app, ["cn-beijing", "cn-shenzhen"]), 409, "region-full")

    def test_the_tenants_node_quota_holds(self, owner, owner_client, running_app):
        type(owner.tenant).objects.filter(pk=owner.tenant.pk).update(max_nodes=2)
        body = assert_problem(
            scale(owner_client, running_app, ["cn-beijing", "cn-shanghai", "cn-shenzhen"]), 409, "quota-exceeded"
        )
        assert "nodes 2+1>2" in body["detail"]

    def test_a_process_region_cannot_join_an_etcd_app(self, owner_client, running_app):
        Region.objects.create(code="cn-local", name="local", driver=Region.Driver.PROCESS)
        body = assert_problem(scale(owner_client, running_app, ["cn-beijing", "cn-local"]), 400, "invalid")
        assert "etcd" in str(body)

    def test_refused_while_another_operation_is_open_or_stopped(self, owner_client, running_app):
        owner_client.post(f"/api/v1/apps/{running_app.pk}/stop")
        assert_problem(scale(owner_client, running_app, ["cn-beijing"]), 409, "operation-in-progress")
        finish_open_operations(running_app.pk)
        assert_problem(scale(owner_client, running_app, ["cn-beijing"]), 409, "app-not-running")

    def test_a_viewer_may_not(self, client_with_role, running_app):
        assert_problem(scale(client_with_role("viewer"), running_app, ["cn-beijing"]), 403, "permission-denied")


def test_both_are_in_the_schema(owner_client):
    schema = owner_client.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for name in ("upgrade", "scale"):
        operation = schema["paths"][f"/api/v1/apps/{{id}}/{name}"]["post"]
        assert "202" in operation["responses"]
        assert operation["requestBody"]["required"] is True


def test_nodes_a_scale_never_started_are_not_left_to_the_reconciler(owner_client, running_app):
    op = accepted(scale(owner_client, running_app, ["cn-beijing", "cn-shanghai", "cn-shenzhen"]), "scale")
    claimed, _ = provisioning.operation_claim(str(op.pk))
    refresh = next(i for i, s in claimed.steps.items() if s["order"] == 0)
    provisioning.step_give_up(str(op.pk), refresh, "cn-beijing: node x did not come back")
    op.refresh_from_db()
    added = LedgerNode.objects.get(app=running_app, region__code="cn-shenzhen")
    assert op.status == "failed"
    assert op.steps[str(added.pk)]["state"] == "skipped"
    assert added.state == "removed"  # not pending: the reconciler would start it
    assert owner_client.get(f"/api/v1/apps/{running_app.pk}").json()["regions"] == ["cn-beijing", "cn-shanghai"]


def rotate(client, app):
    return client.post(f"/api/v1/apps/{app.pk}/rotate-credentials")


class TestRotateCredentials:
    """Rotating the nodes' API credentials is an operation like an upgrade (issue 12)."""

    def test_accepted_audited_and_planned_one_node_at_a_time(self, owner_client, running_app):
        op = accepted(rotate(owner_client, running_app), "rotate")
        assert op.params == {"rotates": "node-api-credential"}
        event = AuditEvent.objects.get(action="app.rotate")
        assert event.data["operation"] == str(op.pk) and event.data["nodes"] == 2
        claimed, why = provisioning.operation_claim(str(op.pk))
        assert claimed is not None, why
        by_region = {n.region.code: str(n.pk) for n in running_app.nodes.select_related("region")}
        first = claimed.steps[by_region["cn-beijing"]]
        assert first == {"state": "pending", "error": "", "order": 0, "action": "rotate"}
        assert claimed.steps[by_region["cn-shanghai"]]["order"] == 1
        assert [str(n.pk) for n in provisioning.pending_steps(claimed)] == [by_region["cn-beijing"]]

    def test_the_step_records_a_new_credential_once_and_keeps_the_old_until_done(self, owner_client, running_app):
        op = accepted(rotate(owner_client, running_app), "rotate")
        claimed, _ = provisioning.operation_claim(str(op.pk))
        first = running_app.nodes.order_by("region__code").first()
        LedgerNode.objects.filter(pk=first.pk).update(api_credential_encrypted="old-ciphertext")
        first.refresh_from_db()
        step = provisioning._progress_begin(claimed, first, action=provisioning.ACTION_ROTATE, target=None)
        row = LedgerNode.objects.get(pk=first.pk)
        assert row.api_credential_previous_encrypted == "old-ciphertext"
        assert row.api_credential_encrypted not in ("", "old-ciphertext")
        assert row.generation == first.generation + 1 and step["generation"] == row.generation
        # A retried step finds its progress and makes no second credential.
        again = provisioning._progress_begin(claimed, first, action=provisioning.ACTION_ROTATE, target=None)
        assert again == step
        assert LedgerNode.objects.get(pk=first.pk).api_credential_encrypted == row.api_credential_encrypted
        # Nothing of a credential is in what the tenant sees of the operation.
        body = owner_client.get(f"/api/v1/operations/{op.pk}").content.decode()
        assert row.api_credential_encrypted not in body and "old-ciphertext" not in body

    def test_refused_while_another_operation_is_open_or_the_app_is_stopped(self, owner_client, running_app):
        accepted(rotate(owner_client, running_app), "rotate")
        assert_problem(rotate(owner_client, running_app), 409, "operation-in-progress")
        finish_open_operations(running_app.pk)
        ChainApp.objects.filter(pk=running_app.pk).update(desired_state=ChainApp.DesiredState.STOPPED)
        assert_problem(rotate(owner_client, running_app), 409, "app-not-running")

    def test_a_viewer_and_another_tenant_may_not(self, client_with_role, outsider_client, running_app):
        viewer = client_with_role("viewer")
        before = row_counts()
        assert_problem(rotate(viewer, running_app), 403, "permission-denied")
        assert_problem(rotate(outsider_client, running_app), 404)
        assert row_counts() == before

"""/api/v1/apps: create (202 + operation), list/filter, retrieve, rename, start/stop/delete, nodes."""

from __future__ import annotations

import uuid

import pytest

from apps.audit.models import AuditEvent
from apps.chainapps.models import ChainApp, LedgerNode, Operation
from apps.common.models import installation_id
from apps.regions.models import Region
from apps.runtime.spec import node_name
from apps.tenants.models import Role, Tenant
from tests.api.conftest import assert_problem, count_queries, finish_open_operations, make_app, row_counts
from tests.factories import RegionFactory

URL = "/api/v1/apps"


def create(client, **body):
    body.setdefault("name", "demo")
    body.setdefault("regions", ["cn-beijing"])
    return client.post(URL, body, format="json")


def assert_accepted(resp, kind: str) -> dict:
    assert resp.status_code == 202, resp.content
    body = resp.json()
    assert body["kind"] == kind
    assert body["status"] == "pending"
    assert resp["Location"] == body["url"]
    assert resp["Location"].endswith(f"/api/v1/operations/{body['id']}")
    return body


@pytest.mark.django_db
class TestCreate:
    def test_create_writes_app_nodes_operation_and_audit_event(
        self, owner_client, tenant_a, regions, django_capture_on_commit_callbacks
    ):
        before = row_counts()
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            resp = create(
                owner_client,
                name="trade-ledger",
                description="letters of credit",
                regions=["cn-shanghai", "cn-beijing"],
                tps_quota=20,
                storage_mb=256,
                contract_template="asset",
                contract_params={"issuer": "acme-bank"},
            )
        op = assert_accepted(resp, "provision")
        assert len(callbacks) == 1  # the worker is asked once, after commit
        app = ChainApp.objects.get(pk=op["app"])
        assert (app.tenant, app.name, app.description) == (tenant_a, "trade-ledger", "letters of credit")
        assert (app.framework.slug, app.contract_template, app.contract_params) == (
            "bsn-ledger",
            "asset",
            {"issuer": "acme-bank"},
        )
        assert (app.tps_quota, app.storage_mb, app.desired_state, app.status) == (20, 256, "running", "pending")
        nodes = list(LedgerNode.objects.filter(app=app).order_by("region__code"))
        assert [n.region.code for n in nodes] == ["cn-beijing", "cn-shanghai"]
        inst = installation_id()
        assert [n.name for n in nodes] == [
            node_name(installation_id=inst, app_id=str(app.pk), region_code=code)
            for code in ("cn-beijing", "cn-shanghai")
        ]
        assert {n.state for n in nodes} == {"pending"}
        operation = Operation.objects.get(app=app)
        assert (str(operation.pk), operation.tenant, operation.created_by.username) == (op["id"], tenant_a, "alice")
        event = AuditEvent.objects.get(action="app.create")
        assert (event.tenant, event.object_id, event.actor_label) == (tenant_a, str(app.pk), "alice")
        assert event.data["operation"] == op["id"]
        after = row_counts()
        assert after == {
            **before,
            "apps": before["apps"] + 1,
            "nodes": before["nodes"] + 2,
            "operations": before["operations"] + 1,
            "audit": before["audit"] + 1,
        }
        # The operation URL answers, and the app shows its regions.
        assert owner_client.get(resp["Location"]).json()["id"] == op["id"]
        detail = owner_client.get(f"{URL}/{app.pk}").json()
        assert detail["regions"] == ["cn-beijing", "cn-shanghai"]
        assert detail["url"].endswith(f"/api/v1/apps/{app.pk}")

    def test_defaults(self, owner_client, regions):
        op = assert_accepted(create(owner_client), "provision")
        app = ChainApp.objects.get(pk=op["app"])
        assert (app.framework.slug, app.contract_template, app.tps_quota, app.storage_mb) == (
            "bsn-ledger",
            "kv",
            10,
            1024,
        )

    def test_platform_tenant_may_create_a_platform_only_contract(self, owner_client, tenant_a, regions):
        tenant_a.kind = Tenant.Kind.PLATFORM
        tenant_a.save()
        resp = create(owner_client, contract_template="dcep", contract_params={"central_bank": "pboc"})
        app = ChainApp.objects.get(pk=assert_accepted(resp, "provision")["app"])
        assert (app.contract_template, app.contract_params) == ("dcep", {"central_bank": "pboc"})

    @pytest.mark.parametrize("kind", [k for k in Tenant.Kind if k != Tenant.Kind.PLATFORM])
    def test_platform_only_contract_is_refused_to_other_tenants(self, owner_client, tenant_a, regions, kind):
        tenant_a.kind = kind
        tenant_a.save()
        before = row_counts()
        resp = create(owner_client, contract_template="dcep", contract_params={"central_bank": "pboc"})
        problem = assert_problem(resp, 400, "invalid")
        assert problem["errors"] == {"contract_template": ["'dcep' is reserved for the platform"]}
        assert row_counts() == before

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({}, "central_bank is required"),
            ({"central_bank": "no spaces"}, "central_bank is required"),
            ({"central_bank": "pboc", "reserve": 1}, "unknown reserve"),
        ],
    )
    def test_bad_params_say_why(self, owner_client, tenant_a, regions, params, message):
        tenant_a.kind = Tenant.Kind.PLATFORM
        tenant_a.save()
        resp = create(owner_client, contract_template="dcep", contract_params=params)
        [error] = assert_problem(resp, 400, "invalid")["errors"]["contract_params"]
        assert message in error
        assert not ChainApp.objects.exists()

    def test_trailing_slash_is_optional(self, owner_client, regions):
        assert owner_client.post(f"{URL}/", {"name": "x", "regions": ["cn-beijing"]}, format="json").status_code == 202
        assert owner_client.get(f"{URL}/").json()["count"] == 1


def _drain(regions):
    Region.objects.filter(code="cn-beijing").update(status=Region.Status.DRAINING)


def _unavailable(regions):
    Region.objects.filter(code="cn-beijing").update(status=Region.Status.UNAVAILABLE)


def _fill(regions):
    Region.objects.filter(code="cn-beijing").update(max_nodes=1)
    # another tenant's node takes the last slot: capacity is platform-wide
    from apps.tenants.models import Membership

    make_app(Membership.objects.get(user__username="mallory"), "filler")


def _quota(**quota):
    def apply(regions):
        from apps.tenants.models import Tenant

        Tenant.objects.filter(slug="acme").update(**quota)

    return apply


def _existing(regions):
    from apps.tenants.models import Membership

    make_app(Membership.objects.get(user__username="alice"), "demo")


def _kv_only_framework(regions):
    from apps.chainapps.models import Framework

    Framework.objects.create(slug="kv-only", name="kv only", version="1", image="x", contract_templates=["kv"])


# (setup, request body overrides or raw bytes, status, code, field in errors)
BAD_CREATES = {
    "unknown-region": (None, {"regions": ["mars-1"]}, 400, "invalid", "regions"),
    "repeated-region": (None, {"regions": ["cn-beijing", "cn-beijing"]}, 400, "invalid", "regions"),
    "no-regions": (None, {"regions": []}, 400, "invalid", "regions"),
    "region-draining": (_drain, {}, 409, "region-unavailable", None),
    "region-unavailable": (_unavailable, {}, 409, "region-unavailable", None),
    "region-full": (_fill, {}, 409, "region-full", None),
    "quota-apps": (_quota(max_apps=0), {}, 409, "quota-exceeded", None),
    "quota-nodes": (_quota(max_nodes=1), {"regions": ["cn-beijing", "cn-shanghai"]}, 409, "quota-exceeded", None),
    "quota-tps": (_quota(max_tps=5), {"tps_quota": 6}, 409, "quota-exceeded", None),
    "quota-storage": (_quota(max_storage_mb=100), {"storage_mb": 101}, 409, "quota-exceeded", None),
    "duplicate-name": (_existing, {}, 409, "duplicate-name", None),
    "unknown-framework": (None, {"framework": "fabric-9"}, 400, "invalid", "framework"),
    "template-not-offered": (
        _kv_only_framework,
        {"framework": "kv-only", "contract_template": "notary"},
        400,
        "invalid",
        "contract_template",
    ),
    "unknown-template": (None, {"contract_template": "casino"}, 400, "invalid", "contract_template"),
    # Parameters a node would refuse at start-up are refused here, before anything is deployed.
    "params-bad-value": (
        None,
        {"contract_template": "asset", "contract_params": {"issuer": 5}},
        400,
        "invalid",
        "contract_params",
    ),
    "params-unknown-key": (
        None,
        {"contract_template": "asset", "contract_params": {"issuer": "bank", "supply": 5}},
        400,
        "invalid",
        "contract_params",
    ),
    "params-for-kv": (None, {"contract_params": {"owner": "acme"}}, 400, "invalid", "contract_params"),
    "platform-only-template": (
        None,
        {"contract_template": "dcep", "contract_params": {"central_bank": "pboc"}},
        400,
        "invalid",
        "contract_template",
    ),
    "bad-name": (None, {"name": "-starts-with-dash"}, 400, "invalid", "name"),
    "name-too-long": (None, {"name": "x" * 64}, 400, "invalid", "name"),
    "no-name": (None, {"name": None}, 400, "invalid", "name"),
    "regions-not-a-list": (None, {"regions": "cn-beijing"}, 400, "invalid", "regions"),
    "tps-not-a-number": (None, {"tps_quota": "lots"}, 400, "invalid", "tps_quota"),
    "tps-zero": (None, {"tps_quota": 0}, 400, "invalid", "tps_quota"),
    "tps-bool": (None, {"tps_quota": True}, 400, "invalid", "tps_quota"),
    "name-a-list": (None, {"name": ["demo"]}, 400, "invalid", "name"),
    "params-not-an-object": (None, {"contract_params": ["a"]}, 400, "invalid", "contract_params"),
    "unknown-field": (None, {"tenant": "globex"}, 400, "invalid", "tenant"),
    "malformed-json": (None, b'{"name": "demo", "regions": ["cn-beijing"', 400, "parse-error", None),
    "json-array": (None, b'[{"name": "demo"}]', 400, "invalid", "non_field_errors"),
    "empty-body": (None, b"", 400, "invalid", "name"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", list(BAD_CREATES), ids=list(BAD_CREATES))
def test_bad_create_says_why_and_changes_nothing(owner_client, outsider, regions, case):
    setup, body, status, code, field = BAD_CREATES[case]
    if setup:
        setup(regions)
    before = row_counts()
    if isinstance(body, bytes):
        resp = owner_client.post(URL, body, content_type="application/json")
    else:
        payload = {"name": "demo", "regions": ["cn-beijing"], **body}
        payload = {k: v for k, v in payload.items() if v is not None}
        resp = owner_client.post(URL, payload, format="json")
    problem = assert_problem(resp, status, code)
    if field:
        assert field in problem["errors"], problem
    assert row_counts() == before


@pytest.mark.django_db
def test_form_encoded_body_is_415(owner_client, regions):
    before = row_counts()
    resp = owner_client.post(URL, "name=demo&regions=cn-beijing", content_type="application/x-www-form-urlencoded")
    assert_problem(resp, 415)
    assert row_counts() == before


@pytest.mark.django_db
class TestReadAndFilter:
    def test_list_and_filters(self, owner_client, owner, regions):
        a = make_app(owner, "alpha", regions=("cn-beijing",))
        b = make_app(owner, "beta", regions=("cn-shanghai", "cn-shenzhen"))
        ChainApp.objects.filter(pk=b.pk).update(status=ChainApp.Status.RUNNING)

        def ids(**params):
            return [row["id"] for row in owner_client.get(URL, params).json()["results"]]

        assert set(ids()) == {str(a.pk), str(b.pk)}
        assert ids(name="alp") == [str(a.pk)]
        assert ids(status="running") == [str(b.pk)]
        assert ids(region="cn-shenzhen") == [str(b.pk)]
        assert ids(ordering="name") == [str(a.pk), str(b.pk)]
        assert ids(ordering="-name") == [str(b.pk), str(a.pk)]
        page = owner_client.get(URL, {"page_size": 1}).json()
        assert (page["count"], len(page["results"])) == (2, 1)
        assert_problem(owner_client.get(URL, {"status": "exploded"}), 400, "invalid")
        past = owner_client.get(URL, {"page": 99}).json()  # past the end: empty, not 404
        assert (past["count"], past["results"]) == (2, [])

    def test_retrieve_and_nodes(self, member_client, app_a):
        body = member_client.get(f"{URL}/{app_a.pk}").json()
        assert (body["name"], body["regions"], body["framework"]) == (
            "ledger-a",
            ["cn-beijing", "cn-shanghai"],
            "bsn-ledger",
        )
        nodes = member_client.get(f"{URL}/{app_a.pk}/nodes").json()["results"]
        assert [n["region"] for n in nodes] == ["cn-beijing", "cn-shanghai"]
        assert {n["id"] for n in nodes} == {str(pk) for pk in app_a.nodes.values_list("pk", flat=True)}

    def test_unknown_app_is_404(self, member_client):
        assert_problem(member_client.get(f"{URL}/{uuid.uuid4()}"), 404, "not-found")
        assert_problem(member_client.get(f"{URL}/not-a-uuid"), 404)
        assert_problem(member_client.get(f"{URL}/{uuid.uuid4()}/nodes"), 404)

    def test_list_query_count_does_not_grow_with_rows(self, owner_client, owner, regions):
        for n in range(2):
            make_app(owner, f"few-{n}", regions=("cn-beijing", "cn-shanghai"))
        owner_client.get(URL)  # warm-up: records the token's first use
        few = count_queries(owner_client, URL)
        for n in range(8):
            make_app(owner, f"many-{n}", regions=("cn-beijing", "cn-shanghai", "cn-shenzhen"))
        assert owner_client.get(URL).json()["count"] == 10
        assert count_queries(owner_client, URL) == few


@pytest.mark.django_db
class TestUpdate:
    def test_rename_and_describe(self, member_client, app_a):
        resp = member_client.patch(f"{URL}/{app_a.pk}", {"name": "renamed", "description": "new"}, format="json")
        assert resp.status_code == 200, resp.content
        assert (resp.json()["name"], resp.json()["description"], resp.json()["regions"]) == (
            "renamed",
            "new",
            ["cn-beijing", "cn-shanghai"],
        )
        app_a.refresh_from_db()
        assert (app_a.name, app_a.description) == ("renamed", "new")
        event = AuditEvent.objects.get(action="app.update")
        assert event.data == {"name": "renamed", "description": "new"}

    @pytest.mark.parametrize(
        ("body", "status", "field"),
        [
            ({"regions": ["cn-shenzhen"]}, 400, "regions"),
            ({"tps_quota": 1000}, 403, None),
            ({"name": "bad name"}, 400, "name"),
            ({"description": ["x"]}, 400, "description"),
            ({"name": "other"}, 409, None),
        ],
        ids=["regions-not-editable", "quota-not-editable", "bad-name", "wrong-type", "duplicate-name"],
    )
    def test_bad_update_changes_nothing(self, owner_client, owner, app_a, body, status, field):
        make_app(owner, "other")
        before = row_counts()
        problem = assert_problem(owner_client.patch(f"{URL}/{app_a.pk}", body, format="json"), status)
        if field:
            assert field in problem["errors"]
        assert row_counts() == before
        app_a.refresh_from_db()
        assert (app_a.name, app_a.tps_quota) == ("ledger-a", 10)

    @pytest.mark.parametrize(
        ("field", "says"),
        [("regions", "/scale"), ("framework", "/upgrade"), ("status", "/start")],
    )
    def test_fields_changed_elsewhere_say_where_or_by_whom(self, owner_client, app_a, field, says):
        problem = assert_problem(owner_client.patch(f"{URL}/{app_a.pk}", {field: "x"}, format="json"), 400)
        assert says in str(problem["errors"][field])

    def test_quotas_are_set_by_platform_staff_within_the_tenants_and_audited(self, owner_client, owner, app_a):
        problem = assert_problem(owner_client.patch(f"{URL}/{app_a.pk}", {"tps_quota": 50}, format="json"), 403)
        assert problem["code"] == "staff-only" and "platform staff" in problem["detail"]
        owner.user.is_staff = True
        owner.user.save(update_fields=["is_staff"])
        over = owner_client.patch(f"{URL}/{app_a.pk}", {"tps_quota": owner.tenant.max_tps + 1}, format="json")
        assert_problem(over, 409, "quota-exceeded")
        resp = owner_client.patch(f"{URL}/{app_a.pk}", {"tps_quota": 50}, format="json")
        assert resp.status_code == 200 and resp.json()["tps_quota"] == 50
        event = AuditEvent.objects.filter(action="app.update", object_id=str(app_a.pk)).latest("id")
        assert event.data == {"tps_quota": 50, "tps_quota_before": 10}

    def test_put_is_not_offered(self, owner_client, app_a):
        assert_problem(owner_client.put(f"{URL}/{app_a.pk}", {"name": "x"}, format="json"), 405)


@pytest.mark.django_db
class TestLifecycle:
    def test_stop_then_start(self, member_client, app_a):
        op = assert_accepted(member_client.post(f"{URL}/{app_a.pk}/stop"), "stop")
        app_a.refresh_from_db()
        assert (app_a.desired_state, app_a.status) == ("stopped", "stopping")
        assert AuditEvent.objects.filter(action="app.stop", data__operation=op["id"]).exists()
        finish_open_operations(app_a.pk)
        assert_accepted(member_client.post(f"{URL}/{app_a.pk}/start"), "start")
        app_a.refresh_from_db()
        assert app_a.desired_state == "running"

    @pytest.mark.parametrize("second", ["start", "stop"])
    def test_second_operation_while_one_is_open_is_409(self, member_client, app_a, second):
        first = assert_accepted(member_client.post(f"{URL}/{app_a.pk}/stop"), "stop")
        before = row_counts()
        problem = assert_problem(member_client.post(f"{URL}/{app_a.pk}/{second}"), 409, "operation-in-progress")
        assert first["id"] in problem["detail"]
        assert row_counts() == before
        app_a.refresh_from_db()
        assert app_a.desired_state == "stopped"

    def test_fresh_app_is_busy_provisioning(self, owner_client, regions):
        op = assert_accepted(create(owner_client), "provision")
        assert_problem(owner_client.post(f"{URL}/{op['app']}/stop"), 409, "operation-in-progress")

    def test_delete_supersedes_a_pending_operation_and_frees_the_name(self, owner_client, regions):
        provision = assert_accepted(create(owner_client, name="short-lived"), "provision")
        app_id = provision["app"]
        resp = owner_client.delete(f"{URL}/{app_id}")
        op = assert_accepted(resp, "delete")
        assert op["params"] == {"keep_data": True}
        assert Operation.objects.get(pk=provision["id"]).status == Operation.Status.CANCELLED
        app = ChainApp.objects.get(pk=app_id)
        assert (app.desired_state, app.status) == ("deleted", "deleting")
        assert app.deleted_at is not None
        # Gone from the list (unless asked for), still readable to follow it; the name is free again.
        assert owner_client.get(URL).json()["count"] == 0
        assert owner_client.get(URL, {"include_deleted": "true"}).json()["count"] == 1
        assert owner_client.get(f"{URL}/{app_id}").json()["status"] == "deleting"
        assert_accepted(create(owner_client, name="short-lived"), "provision")
        # Acting on the deleted app again is refused and changes nothing.
        before = row_counts()
        assert_problem(owner_client.post(f"{URL}/{app_id}/start"), 409, "app-deleted")
        assert_problem(owner_client.post(f"{URL}/{app_id}/stop"), 409, "app-deleted")
        assert_problem(owner_client.delete(f"{URL}/{app_id}"), 409, "app-deleted")
        assert_problem(owner_client.patch(f"{URL}/{app_id}", {"name": "zombie"}, format="json"), 409, "app-deleted")
        assert row_counts() == before
        assert ChainApp.objects.get(pk=app_id).name == "short-lived"

    def test_delete_can_drop_data(self, owner_client, app_a):
        assert assert_accepted(owner_client.delete(f"{URL}/{app_a.pk}?keep_data=false"), "delete")["params"] == {
            "keep_data": False
        }

    def test_delete_with_bad_keep_data_is_400(self, owner_client, app_a):
        before = row_counts()
        problem = assert_problem(owner_client.delete(f"{URL}/{app_a.pk}?keep_data=maybe"), 400)
        assert "keep_data" in problem["errors"]
        assert row_counts() == before

    def test_nodes_survive_delete_until_the_worker_removes_them(self, owner_client, app_a):
        owner_client.delete(f"{URL}/{app_a.pk}")
        assert LedgerNode.objects.filter(app=app_a).count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.VIEWER])
def test_viewer_reads_but_cannot_change_apps(client_with_role, app_a, regions, role):
    client = client_with_role(role)
    assert client.get(URL).status_code == 200
    assert client.get(f"{URL}/{app_a.pk}").status_code == 200
    assert client.get(f"{URL}/{app_a.pk}/nodes").status_code == 200
    before = row_counts()
    assert_problem(create(client, name="nope"), 403, "permission-denied")
    assert_problem(client.patch(f"{URL}/{app_a.pk}", {"name": "x"}, format="json"), 403)
    assert_problem(client.post(f"{URL}/{app_a.pk}/stop"), 403)
    assert_problem(client.post(f"{URL}/{app_a.pk}/start"), 403)
    assert_problem(client.delete(f"{URL}/{app_a.pk}"), 403)
    assert row_counts() == before


@pytest.mark.django_db
def test_capacity_is_counted_across_regions_and_tenants(owner_client, outsider, regions):
    RegionFactory(code="cn-tiny", max_nodes=2)
    make_app(outsider, "b-app", regions=("cn-tiny",))
    assert_accepted(create(owner_client, name="fits", regions=["cn-tiny"]), "provision")
    assert_problem(create(owner_client, name="no-room", regions=["cn-tiny", "cn-beijing"]), 409, "region-full")

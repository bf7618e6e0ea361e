"""What a node step reads once (apps/common/scope.py) and the app's etcd user made ahead of
its steps (provisioning.operation_prepare); no etcd, no Docker: the root client is a fake."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.chainapps import provisioning
from apps.chainapps.models import ChainApp, Framework, Operation
from apps.common.models import installation_id
from apps.common.scope import forget, scoped, work_scope
from apps.ordering import services
from apps.ordering.models import AppOrderingCredential, OrderingCluster, OrderingMember
from tests.factories import RegionFactory, TenantFactory

pytestmark = pytest.mark.django_db


def _service() -> None:
    region = RegionFactory(code="cn-scope", driver="docker")
    OrderingCluster.objects.create(
        pk=1, token="t", root_password_encrypted="x", auth_enabled=True, state=OrderingCluster.State.HEALTHY
    )
    for index in range(3):
        OrderingMember.objects.create(index=index, region=region, name=f"m{index}", endpoint=f"http://m{index}:1")


def _app(ordering: str = ChainApp.Ordering.ETCD) -> ChainApp:
    framework, _ = Framework.objects.get_or_create(
        slug="scope-test", defaults={"name": "t", "version": "1", "image": "bsn/ledger:latest"}
    )
    return ChainApp.objects.create(tenant=TenantFactory(), name="a", framework=framework, ordering=ordering)


def test_a_scope_loads_each_key_once_and_outside_one_every_call_loads():
    loads: list[str] = []

    def load() -> str:
        loads.append("x")
        return f"v{len(loads)}"

    assert scoped("k", load) == "v1" and scoped("k", load) == "v2"  # no scope: every call
    with work_scope():
        assert scoped("k", load) == "v3" and scoped("k", load) == "v3"
        forget("k")  # the unit of work changed it
        assert scoped("k", load) == "v4"
        with work_scope():  # a unit of work of its own reads its own
            assert scoped("k", load) == "v5"
        assert scoped("k", load) == "v4"
    assert scoped("k", load) == "v6"


def test_a_step_reads_the_installation_and_the_ordering_rows_once(django_assert_num_queries):
    _service()
    installation_id()  # the row exists (made on first use)
    with work_scope(), django_assert_num_queries(3):  # installation, members, cluster
        for _ in range(3):
            installation_id()
            assert [m.name for m in services._members_now()] == ["m0", "m1", "m2"]
            assert services._cluster_now().auth_enabled
    with django_assert_num_queries(2):  # outside a step: read each time
        services._members_now()
        services._members_now()


def test_a_full_ordering_pass_makes_the_step_read_the_rows_again(monkeypatch):
    """The fast check fails (the cluster looked degraded), the full pass changes the rows:
    what the step reads after it is what the pass left, not what it read before."""
    _service()
    OrderingCluster.objects.filter(pk=1).update(state=OrderingCluster.State.DEGRADED)

    def full_pass(*args, **kwargs):
        OrderingMember.objects.filter(index=0).update(endpoint="http://m0-new:1")
        OrderingCluster.objects.filter(pk=1).update(state=OrderingCluster.State.HEALTHY, last_checked_at=timezone.now())
        return "started"

    for name in ("_update_peer_urls", "_wait_quorum", "_setup_auth", "_wait_members", "_record_health"):
        monkeypatch.setattr(services, name, lambda *a, **k: None)
    monkeypatch.setattr(services, "_start_member", full_pass)
    with work_scope():
        assert services._members_now()[0].endpoint == "http://m0:1"
        services.ordering_ensure(timeout=1)
        assert services._members_now()[0].endpoint == "http://m0-new:1"
        assert services._cluster_now().state == OrderingCluster.State.HEALTHY


class FakeRoot:
    endpoints = ["http://m0:1"]

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def user_add(self, user, password):
        self.calls.append("user_add")
        return True

    def role_add(self, role):
        self.calls.append("role_add")

    def role_grant_permission(self, role, key, end, permission):
        self.calls.append("grant")

    def user_grant_role(self, user, role):
        self.calls.append("user_grant_role")


def test_app_credentials_are_made_once_then_read_without_a_lock(monkeypatch, django_assert_num_queries):
    _service()
    app = _app()
    calls: list[str] = []
    monkeypatch.setattr(services, "admin_client", lambda **kw: FakeRoot(calls))
    made = services.ordering_app_credentials(app)
    assert _rounds(calls) == ROUNDS
    assert made["prefix"] == f"/bsn/apps/{app.pk}/"
    with django_assert_num_queries(1):  # one plain read: no transaction, no row lock
        assert services.ordering_app_credentials(app) == made
    assert _rounds(calls) == ROUNDS


# Made in two rounds of etcd writes: user and role side by side, then the two grants.
ROUNDS = [{"user_add", "role_add"}, {"grant", "user_grant_role"}]


def _rounds(calls: list[str]) -> list[set[str]]:
    return [set(calls[:2]), set(calls[2:])]


def _provision(app: ChainApp, kind: str = Operation.Kind.PROVISION) -> Operation:
    return Operation.objects.create(tenant=app.tenant, app=app, kind=kind, status=Operation.Status.RUNNING)


def test_a_create_makes_the_etcd_user_ahead_of_its_steps(monkeypatch):
    _service()
    app, solo = _app(), _app(ChainApp.Ordering.SOLO)
    calls: list[str] = []
    monkeypatch.setattr(services, "admin_client", lambda **kw: FakeRoot(calls))
    provisioning.operation_prepare(_provision(solo))  # no etcd user for a solo app
    provisioning.operation_prepare(_provision(app, Operation.Kind.STOP))  # nor for other operations
    assert calls == [] and not AppOrderingCredential.objects.exists()
    provisioning.operation_prepare(_provision(app))
    assert AppOrderingCredential.objects.get(app=app).provisioned_at is not None
    assert _rounds(calls) == ROUNDS


def test_a_create_whose_etcd_user_cannot_be_made_ahead_leaves_it_to_the_steps(monkeypatch, caplog):
    _service()
    app = _app()

    def unavailable(**kw):
        raise services.OrderingNotReady("no member answers")

    monkeypatch.setattr(services, "admin_client", unavailable)
    with caplog.at_level(logging.INFO, logger="apps.chainapps.provisioning"):
        provisioning.operation_prepare(_provision(app))  # does not raise: the steps try again
    assert "not made ahead of its steps: no member answers" in caplog.text
    assert not AppOrderingCredential.objects.filter(app=app).exists()  # rolled back: the first step makes it


class FakeAppClient:
    """EtcdClient stand-in for the app user's one authentication."""

    made: list[tuple] = []

    def __init__(self, endpoints, *, user=None, password=None, timeout=None, token=None):
        self.user, self.password = user, password

    def authenticate(self):
        FakeAppClient.made.append((self.user, self.password))
        return f"token-of-{self.user}"


def test_a_create_claiming_warm_nodes_gets_one_etcd_token_for_them_all(monkeypatch):
    """The warm nodes a create claims start with one token of the app's etcd user, got
    with the user (each would else authenticate itself: a Raft write per node); a node
    made on demand, or a token past APP_TOKEN_FRESH_S, gets none (its password serves)."""
    _service()
    app, cold = _app(), _app()
    region = OrderingMember.objects.first().region
    for each, warm in ((app, "w1"), (cold, "")):
        each.nodes.create(region=region, framework=each.framework, name=f"n-{each.pk}", warm=warm)
    calls: list[str] = []
    FakeAppClient.made = []
    monkeypatch.setattr(services, "admin_client", lambda **kw: FakeRoot(calls))
    monkeypatch.setattr(services, "EtcdClient", FakeAppClient)
    provisioning.operation_prepare(_provision(cold))  # no warm node: no token
    assert FakeAppClient.made == [] and "token" not in services.ordering_app_credentials(cold)
    provisioning.operation_prepare(_provision(app))
    user = AppOrderingCredential.objects.get(app=app).user
    assert [who for who, _ in FakeAppClient.made] == [user]  # once, as the app's user
    creds = services.ordering_app_credentials(app)
    assert creds["token"] == f"token-of-{user}"
    warm, made_now = app.nodes.get(), cold.nodes.get()
    env = services.ordering_node_env(app, warm, creds=creds)
    assert env["BSN_ETCD_TOKEN"] == creds["token"] and env["BSN_ETCD_PASSWORD"] == creds["password"]
    made_now.app = app  # a node of the same app made on demand: its spec never carries one
    assert "BSN_ETCD_TOKEN" not in services.ordering_node_env(app, made_now, creds=creds)
    old = timezone.now() - timedelta(seconds=services.APP_TOKEN_FRESH_S + 1)
    AppOrderingCredential.objects.filter(app=app).update(token_at=old)
    assert "token" not in services.ordering_app_credentials(app)  # too old to hand over


def test_no_etcd_token_leaves_the_nodes_to_authenticate_themselves(monkeypatch, caplog):
    _service()
    app = _app()
    app.nodes.create(region=OrderingMember.objects.first().region, framework=app.framework, name="n", warm="w1")
    monkeypatch.setattr(services, "admin_client", lambda **kw: FakeRoot([]))

    class Refusing(FakeAppClient):
        def authenticate(self):
            raise services.EtcdUnavailable("no member answers")

    monkeypatch.setattr(services, "EtcdClient", Refusing)
    with caplog.at_level(logging.INFO, logger="apps.ordering.services"):
        provisioning.operation_prepare(_provision(app))
    cred = AppOrderingCredential.objects.get(app=app)
    assert cred.provisioned_at is not None and cred.token_encrypted == ""  # the user is made all the same
    assert "no etcd token" in caplog.text and "token" not in services.ordering_app_credentials(app)

"""Spare etcd users made ahead (services.ordering_spares_fill), taken by the next etcd apps
so that their creates make none on their way; on a real etcd with auth on (no Docker)."""

from __future__ import annotations

import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.chainapps import provisioning
from apps.chainapps.models import ChainApp, Framework, Operation
from apps.common.crypto import encrypt_secret
from apps.ordering import services
from apps.ordering.models import AppOrderingCredential, OrderingCluster, OrderingMember
from bsn.ledger.etcd_http import EtcdAuthError, EtcdClient, EtcdUnavailable
from tests.factories import RegionFactory, TenantFactory


@pytest.fixture
def etcd_root(etcd_factory, monkeypatch):
    """A fresh etcd with auth on and root; the ordering service's root client and members
    point at it; every etcd call the control plane makes as root is counted."""
    server = etcd_factory()
    anon = EtcdClient([server.endpoint])
    anon.user_add("root", "root-pw")
    anon.role_add("root")
    anon.user_grant_role("root", "root")
    anon.auth_enable()
    root = EtcdClient([server.endpoint], user="root", password="root-pw")
    calls: list[str] = []
    real_call = root.call
    root.call = lambda path, body, **kw: calls.append(path) or real_call(path, body, **kw)
    monkeypatch.setattr(services, "admin_client", lambda **kw: root)
    region = RegionFactory(code="cn-spare", driver="docker")
    OrderingCluster.objects.create(
        pk=1, token="t", root_password_encrypted=encrypt_secret("root-pw"), auth_enabled=True, spare_users=2
    )
    for index in range(3):
        OrderingMember.objects.create(index=index, region=region, name=f"m{index}", endpoint=server.endpoint)
    root.calls = calls
    return root


def _app(name: str = "a") -> ChainApp:
    framework, _ = Framework.objects.get_or_create(
        slug="spare-test", defaults={"name": "t", "version": "1", "image": "bsn/ledger:latest"}
    )
    return ChainApp.objects.create(tenant=TenantFactory(), name=name, framework=framework, ordering="etcd")


def _spares() -> list[AppOrderingCredential]:
    return list(AppOrderingCredential.objects.filter(app__isnull=True).order_by("created_at"))


@pytest.mark.django_db
def test_a_create_takes_a_spare_made_ahead_and_makes_no_etcd_user_on_its_way(etcd_root):
    assert services.ordering_spares_fill() == {"made": 2, "dropped": 0, "errors": []}
    first, second = _spares()
    assert all(etcd_root.user_get(s.user) == [s.role] for s in (first, second))
    assert services.ordering_spares_fill() == {"made": 0, "dropped": 0, "errors": []}  # as wanted

    etcd_root.calls.clear()
    app = _app()
    creds = services.ordering_app_credentials(app)
    assert etcd_root.calls == []  # taken: not one etcd call on the create's way
    assert (creds["user"], creds["prefix"]) == (first.user, first.prefix) and creds["prefix"] != f"/bsn/apps/{app.pk}/"
    assert services.ordering_app_credentials(app) == creds  # stable: its own from now on
    # Confined to the spare's prefix, like a user made for the app.
    mine = EtcdClient([etcd_root.endpoints[0]], user=creds["user"], password=creds["password"])
    mine.put(f"{creds['prefix']}height", "1")
    assert mine.get(f"{creds['prefix']}height").value == b"1"
    for elsewhere in (second.prefix, f"/bsn/apps/{app.pk}/", "/"):
        with pytest.raises(EtcdAuthError, match="permission denied"):
            mine.get(f"{elsewhere}height")

    other, third = _app("b"), _app("c")
    assert services.ordering_app_credentials(other)["user"] == second.user
    assert _spares() == []
    made = services.ordering_app_credentials(third)  # none left: made on the way, as before
    assert made["prefix"] == f"/bsn/apps/{third.pk}/" and "/v3/auth/user/add" in etcd_root.calls
    assert services.ordering_spares_fill()["made"] == 2  # made up (a worker does it after each take)

    OrderingCluster.objects.update(spare_users=0)
    dropped = _spares()
    assert services.ordering_spares_fill() == {"made": 0, "dropped": 2, "errors": []}
    assert _spares() == [] and all(etcd_root.user_get(s.user) is None for s in dropped)
    assert services.ordering_revoke_app(app) is True  # an app's spare-born user goes with it
    assert etcd_root.user_get(first.user) is None


@pytest.mark.django_db
def test_a_create_claiming_warm_nodes_gets_a_token_of_its_spare_user(etcd_root):
    services.ordering_spares_fill()
    app = _app()
    app.nodes.create(region=OrderingMember.objects.first().region, framework=app.framework, name="n", warm="w1")
    op = Operation.objects.create(tenant=app.tenant, app=app, kind=Operation.Kind.PROVISION)
    provisioning.operation_prepare(op)
    creds = services.ordering_app_credentials(app)
    assert creds["user"] == AppOrderingCredential.objects.get(app=app).user and creds["token"]
    handed = EtcdClient([etcd_root.endpoints[0]], user=creds["user"], password="wrong", token=creds["token"])
    handed.put(f"{creds['prefix']}k", "v")  # the token serves: the wrong password is never tried


@pytest.mark.django_db(transaction=True)
def test_one_spare_goes_to_one_app_when_creates_race(etcd_root):
    OrderingCluster.objects.update(spare_users=1)
    services.ordering_spares_fill()
    (spare,) = _spares()
    apps = [_app(f"r{i}") for i in range(4)]
    got: dict[str, str] = {}
    start = threading.Barrier(len(apps))

    def create(app: ChainApp) -> None:
        try:
            start.wait()
            got[str(app.pk)] = services.ordering_app_credentials(app)["user"]
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(app,)) for app in apps]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(got.values()).count(spare.user) == 1 and len(set(got.values())) == len(apps)
    assert AppOrderingCredential.objects.filter(app__isnull=False).count() == len(apps)


@pytest.mark.django_db
def test_bsn_ordering_spares_sets_the_pool_and_says_what_it_did(etcd_root, capsys):
    call_command("bsn_ordering", "spares", "1")
    out = capsys.readouterr().out
    assert "spare etcd users: 1 wanted; made 1, dropped 0" in out
    assert "1 of 1 spare user(s) made ahead" in out
    for bad in ([], ["51"], ["-1"]):
        with pytest.raises(CommandError, match="spares needs a count from 0 to 50"):
            call_command("bsn_ordering", "spares", *bad)
    OrderingCluster.objects.all().delete()
    with pytest.raises(CommandError, match="not provisioned"):
        call_command("bsn_ordering", "spares", "2")


@pytest.mark.django_db
def test_a_fill_stopped_half_way_leaves_nothing_behind(etcd_root, monkeypatch):
    OrderingCluster.objects.update(spare_users=1)
    real_grant = etcd_root.user_grant_role

    def refused(user, role):
        raise EtcdUnavailable("no member answers")

    monkeypatch.setattr(etcd_root, "user_grant_role", refused)
    report = services.ordering_spares_fill()
    assert report["made"] == 0 and "no member answers" in report["errors"][0]
    assert not AppOrderingCredential.objects.exists()  # its user and role went with its row
    assert [u for u in etcd_root.call("/v3/auth/user/list", {}).get("users", []) if u != "root"] == []
    # A fill whose process died half way: a row without provisioned_at and what etcd got.
    monkeypatch.setattr(etcd_root, "user_grant_role", real_grant)
    half = services._new_credential("0" * 32)
    etcd_root.user_add(half.user, "x")
    assert services._take_spare(_app()) is None  # never given to an app
    assert services.ordering_spares_fill() == {"made": 1, "dropped": 1, "errors": []}
    assert etcd_root.user_get(half.user) is None and not AppOrderingCredential.objects.filter(pk=half.pk).exists()

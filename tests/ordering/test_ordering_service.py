"""The containerised ordering service on a real Docker engine (apps/ordering).

One cluster per test (bootstrap takes a few seconds); everything created is found by the
installation label and removed in the finalizer.
"""

from __future__ import annotations

import contextlib
import time

import docker
import docker.errors
import pytest
from django.core.management import call_command

from apps.chainapps.models import ChainApp, Framework, LedgerNode
from apps.common.models import installation_id
from apps.ordering import services
from apps.ordering.models import AppOrderingCredential, OrderingCluster, OrderingMember
from apps.ordering.spec import ordering_network_name
from apps.regions.models import Region
from apps.runtime.drivers import clear_driver_cache
from apps.runtime.spec import LABEL_APP, LABEL_INSTALLATION, LABEL_MANAGED, LABEL_ROLE
from bsn.ledger.etcd_http import EtcdAuthError, EtcdClient
from tests.factories import RegionFactory, TenantFactory
from tests.ordering.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def _cleanup(client: docker.DockerClient, inst: str) -> None:
    label = f"{LABEL_INSTALLATION}={inst}"
    for c in client.containers.list(all=True, filters={"label": [label, f"{LABEL_ROLE}=ordering"]}):
        c.remove(force=True, v=True)
    for c in client.containers.list(all=True, filters={"label": [label, "io.bsn.test=ordering"]}):
        c.remove(force=True)
    for v in client.volumes.list(filters={"label": [label, f"{LABEL_ROLE}=ordering-data"]}):
        v.remove(force=True)
    for n in client.networks.list(filters={"label": [label]}):
        if n.name == ordering_network_name(inst) or n.attrs.get("Labels", {}).get("io.bsn.test") == "ordering":
            n.reload()
            for cid in n.attrs.get("Containers") or {}:
                try:
                    n.disconnect(cid, force=True)
                except docker.errors.APIError:
                    pass
            n.remove()


@pytest.fixture
def ordering(db, docker_engine, ledger_image):
    for code in ("ord-a", "ord-b", "ord-c"):
        RegionFactory(code=code, driver=Region.Driver.DOCKER)
    clear_driver_cache()
    inst = installation_id()
    _cleanup(docker_engine, inst)
    yield inst
    _cleanup(docker_engine, inst)
    clear_driver_cache()


def _containers(client, inst):
    return client.containers.list(
        all=True, filters={"label": [f"{LABEL_INSTALLATION}={inst}", f"{LABEL_ROLE}=ordering"]}
    )


@contextlib.contextmanager
def _engine_forbidden(monkeypatch):
    """Yields the codes of the regions whose engine was asked for (each ask also fails)."""
    asked: list[str] = []

    def no_engine(region):
        asked.append(region.code)
        raise AssertionError(f"the engine of {region.code} was asked")

    with monkeypatch.context() as patched:
        patched.setattr(services, "driver_for_region", no_engine)
        yield asked


def _root() -> EtcdClient:
    return services.admin_client()


def _wait_writable(key: str, value: str, timeout: float = 30) -> None:
    def ok():
        try:
            services.ordering_heal()
            _root().put(key, value)
            return True
        except Exception:  # noqa: BLE001 - still coming up
            return False

    assert wait_until(ok, timeout, interval=0.5), f"cluster not writable within {timeout}s"


def test_three_hardened_members_survive_kill_heal_and_full_restart(ordering, docker_engine):
    started = time.monotonic()
    cluster = services.ordering_ensure()
    # Bootstrap waits for a quorum, then up to STARTED_GRACE for the members it started to
    # know the leader: a fresh cluster reads healthy at once (a fresh-clone run once saw
    # "degraded" when it recorded health at quorum, the third member still joining).
    assert cluster.auth_enabled and cluster.state == OrderingCluster.State.HEALTHY
    members = list(OrderingMember.objects.select_related("region").order_by("index"))
    assert [m.region.code for m in members] == ["ord-a", "ord-b", "ord-c"]
    assert all(m.state == OrderingMember.State.RUNNING and m.endpoint for m in members)
    print(f"bootstrap took {time.monotonic() - started:.1f}s")

    containers = _containers(docker_engine, ordering)
    assert sorted(c.name for c in containers) == sorted(m.name for m in members)
    for c in containers:
        host = c.attrs["HostConfig"]
        assert c.attrs["Config"]["User"] == "10001:10001"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert host["Memory"] == 256 * 2**20 and host["Privileged"] is False
        assert host["NetworkMode"] != "host"
        assert [m["Name"] for m in c.attrs["Mounts"]] == [f"{c.name}-data"]
        assert ordering_network_name(ordering) in c.attrs["NetworkSettings"]["Networks"]
        assert c.labels[LABEL_MANAGED] == "true" and c.labels[LABEL_ROLE] == "ordering"
        assert "--bcrypt-cost=4" in c.attrs["Config"]["Cmd"]  # random passwords: cheap hashing
        bindings = c.attrs["NetworkSettings"]["Ports"]["2379/tcp"]
        assert bindings[0]["HostIp"] == "127.0.0.1" and "2380/tcp" not in (host["PortBindings"] or {})
        member = next(m for m in members if m.name == c.name)
        assert bindings[0]["HostPort"] == str(member.host_port)  # its own port, kept across restarts

    ids = {c.id for c in containers}
    services.ordering_ensure()  # idempotent: adopts, creates nothing
    assert {c.id for c in _containers(docker_engine, ordering)} == ids

    with pytest.raises(EtcdAuthError):  # auth is on: no anonymous access
        EtcdClient([members[0].endpoint]).get("/bsn/x")
    root = _root()
    root.put("/bsn/test/before", "1")

    # One member dies: the other two keep a quorum and serve writes.
    docker_engine.containers.get(members[0].name).kill()
    root.put("/bsn/test/during", "2")
    assert root.get("/bsn/test/before").value == b"1"
    report = services.ordering_heal()
    assert report["restarted"] == [members[0].name]
    assert wait_until(lambda: services.ordering_heal()["state"] == OrderingCluster.State.HEALTHY, 30, 0.5)
    member0 = OrderingMember.objects.get(index=0)
    assert member0.endpoint == members[0].endpoint  # same host port after the restart
    assert EtcdClient([member0.endpoint], user="root", password=_password()).get("/bsn/test/during").value == b"2"

    # All three at once (power cut): same names and volumes, data intact.
    for c in _containers(docker_engine, ordering):
        c.kill()
    _wait_writable("/bsn/test/after", "3")
    assert _root().get("/bsn/test/before").value == b"1"
    assert _root().get("/bsn/test/during").value == b"2"
    assert len(_root().member_list()) == 3
    assert {c.id for c in _containers(docker_engine, ordering)} == ids  # restarted, not recreated

    call_command("bsn_ordering", "status")


def _password() -> str:
    from apps.common.crypto import decrypt_secret

    return decrypt_secret(OrderingCluster.objects.get(pk=1).root_password_encrypted)


def _app(name: str) -> ChainApp:
    framework, _ = Framework.objects.get_or_create(
        slug="ord-test", defaults={"name": "t", "version": "1", "image": "bsn/ledger:latest"}
    )
    return ChainApp.objects.create(
        tenant=TenantFactory(), name=name, framework=framework, ordering=ChainApp.Ordering.ETCD
    )


def test_app_credentials_are_confined_to_the_app_prefix_and_apps_reach_the_client_port_only(
    ordering, docker_engine, ledger_image
):
    services.ordering_ensure()
    app_a, app_b = _app("a"), _app("b")
    creds_a = services.ordering_app_credentials(app_a)
    creds_b = services.ordering_app_credentials(app_b)
    assert creds_a == services.ordering_app_credentials(app_a)  # stable
    assert creds_a["prefix"] == f"/bsn/apps/{app_a.pk}/" and creds_a["user"] == f"app-{app_a.pk.hex}"
    _root().put("/bsn/root-only", "secret")

    endpoints = [m.endpoint for m in OrderingMember.objects.all()]
    a = EtcdClient(endpoints, user=creds_a["user"], password=creds_a["password"])
    b = EtcdClient(endpoints, user=creds_b["user"], password=creds_b["password"])
    a.put(f"{creds_a['prefix']}height", "1")
    b.put(f"{creds_b['prefix']}height", "7")
    assert a.get(f"{creds_a['prefix']}height").value == b"1"
    for attempt in (
        lambda: a.get(f"{creds_b['prefix']}height"),
        lambda: a.put(f"{creds_b['prefix']}height", "8"),
        lambda: a.range(creds_b["prefix"], prefix=True),
        lambda: a.get("/bsn/root-only"),
        lambda: a.put("/bsn/root-only", "mine"),
        lambda: a.range("/", prefix=True),
    ):
        with pytest.raises(EtcdAuthError, match="permission denied"):
            attempt()
    assert b.get(f"{creds_b['prefix']}height").value == b"7"

    # A ledger node's view: env for its container, members reached by name on the app network.
    region = Region.objects.get(code="ord-b")
    node = LedgerNode.objects.create(app=app_a, region=region, name=f"bsn-test-{app_a.pk.hex[:12]}")
    env = services.ordering_node_env(app_a, node)
    names = [m.name for m in OrderingMember.objects.order_by("index")]
    assert env == {
        "BSN_ORDERING": "etcd",
        "BSN_ETCD_ENDPOINTS": ",".join(f"http://{n}:2379" for n in names),
        "BSN_ETCD_USER": creds_a["user"],
        "BSN_ETCD_PASSWORD": creds_a["password"],
        "BSN_ETCD_PREFIX": creds_a["prefix"],
    }
    net = f"bsn-{ordering[:8]}-ordtest-net"
    docker_engine.networks.create(
        net,
        driver="bridge",
        labels={
            LABEL_MANAGED: "true",
            LABEL_INSTALLATION: ordering,
            LABEL_APP: str(app_a.pk),
            "io.bsn.test": "ordering",
        },
    )
    assert services.ordering_attach(net) == names
    assert services.ordering_attach(net) == names  # idempotent
    probe = (
        "import os; from bsn.ledger.etcd_http import EtcdClient as C; "
        "c = C(os.environ['BSN_ETCD_ENDPOINTS'], user=os.environ['BSN_ETCD_USER'], "
        "password=os.environ['BSN_ETCD_PASSWORD']); p = os.environ['BSN_ETCD_PREFIX']; "
        "c.put(p + 'from-node', 'ok'); print(c.get(p + 'height').value.decode())"
    )
    out = docker_engine.containers.run(
        ledger_image,
        ["python3", "-c", probe],
        environment=env,
        network=net,
        user="10001:10001",
        labels={LABEL_INSTALLATION: ordering, "io.bsn.test": "ordering"},
        remove=True,
    )
    assert out.decode().strip() == "1"
    assert a.get(f"{creds_a['prefix']}from-node").value == b"ok"

    # From the app network: the client port answers, the peer port does not (neither by
    # the member's name there nor at its ordering-network address).
    ordering_net = ordering_network_name(ordering)
    ordering_ips = {
        c.name: c.attrs["NetworkSettings"]["Networks"][ordering_net]["IPAddress"]
        for c in _containers(docker_engine, ordering)
    }
    targets = [[n, 2379] for n in names] + [[n, 2380] for n in names] + [[ordering_ips[n], 2380] for n in names]
    reach = _probe_ports(docker_engine, ledger_image, net, ordering, targets)
    assert reach == {f"{n}:2379": "open" for n in names} | {
        f"{host}:2380": "closed" for host in [*names, *ordering_ips.values()]
    }, reach
    # The same probe on the ordering network sees the peer port open: the probe can tell.
    peer_names = [f"{n}.{ordering_net}" for n in names]
    on_ordering = _probe_ports(docker_engine, ledger_image, ordering_net, ordering, [[p, 2380] for p in peer_names])
    assert on_ordering == {f"{p}:2380": "open" for p in peer_names}, on_ordering

    # Delete: user, role and keys go; the old password no longer works.
    assert services.ordering_revoke_app(app_a) is True
    assert not AppOrderingCredential.objects.filter(app=app_a).exists()
    with pytest.raises(EtcdAuthError):
        EtcdClient(endpoints, user=creds_a["user"], password=creds_a["password"]).get(f"{creds_a['prefix']}height")
    assert _root().range(creds_a["prefix"], prefix=True).kvs == []
    assert services.ordering_revoke_app(app_a) is False


_PORT_PROBE = """
import json, socket, sys
out = {}
for host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=2).close()
        out[f"{host}:{port}"] = "open"
    except OSError:
        out[f"{host}:{port}"] = "closed"
print(json.dumps(out))
"""


def _probe_ports(client, image: str, network: str, inst: str, targets: list) -> dict[str, str]:
    """{"host:port": "open" | "closed"} as seen by a container on ``network``."""
    import json

    out = client.containers.run(
        image,
        ["python3", "-c", _PORT_PROBE, json.dumps(targets)],
        network=network,
        user="10001:10001",
        labels={LABEL_INSTALLATION: inst, "io.bsn.test": "ordering"},
        remove=True,
    )
    return json.loads(out.decode().strip().splitlines()[-1])


def test_status_command_before_and_errors(db, capsys):
    call_command("bsn_ordering", "status")
    assert "not provisioned" in capsys.readouterr().out
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="docker or swarm driver"):
        call_command("bsn_ordering", "ensure")  # no docker or swarm region: one line, non-zero exit


def test_a_member_that_lost_its_volume_rejoins_as_a_new_member(ordering, docker_engine):
    services.ordering_ensure()
    members = list(OrderingMember.objects.select_related("region").order_by("index"))
    _root().put("/bsn/test/kept", "1")
    old_ids = {m["name"]: m["ID"] for m in _root().member_list()}

    lost = members[1]  # its disk is gone: container and volume
    docker_engine.containers.get(lost.name).remove(force=True)
    docker_engine.volumes.get(f"{lost.name}-data").remove(force=True)
    _root().put("/bsn/test/while-lost", "2")  # two members keep the quorum

    report = services.ordering_heal()
    assert report["rejoined"] == [lost.name] and report["restarted"] == [lost.name], report
    assert wait_until(lambda: services.ordering_heal()["state"] == OrderingCluster.State.HEALTHY, 60, 0.5)
    listed = {m["name"]: m["ID"] for m in _root().member_list()}
    assert sorted(listed) == sorted(m.name for m in members)  # three started members again
    assert listed[lost.name] != old_ids[lost.name]  # a new identity, same name
    rejoined = OrderingMember.objects.get(pk=lost.pk)
    copy = EtcdClient([rejoined.endpoint], user="root", password=_password())
    assert wait_until(lambda: copy.range("/bsn/test/while-lost", serializable=True).kvs, 30, 0.5)
    assert copy.range("/bsn/test/kept", serializable=True).kvs[0].value == b"1"  # copied from the others

    # Fault tolerance is back: another member may die now.
    docker_engine.containers.get(members[2].name).kill()
    _root().put("/bsn/test/after", "3")
    assert services.ordering_heal()["rejoined"] == []  # a plain kill keeps its volume: restarted as itself

    # Provisioning's ensure (not only heal) re-admits a member whose disk is gone.
    assert wait_until(lambda: services.ordering_heal()["state"] == OrderingCluster.State.HEALTHY, 60, 0.5)
    docker_engine.containers.get(members[0].name).remove(force=True)
    docker_engine.volumes.get(f"{members[0].name}-data").remove(force=True)
    services.ordering_ensure()
    assert wait_until(lambda: services.ordering_heal()["state"] == OrderingCluster.State.HEALTHY, 60, 0.5)
    assert sorted(m["name"] for m in _root().member_list()) == sorted(m.name for m in members)


def test_members_that_listened_everywhere_are_upgraded_in_place(ordering, docker_engine, monkeypatch):
    """Generation-1 members (peer port on 0.0.0.0, peers by plain container name) become
    generation 2 on the next heal: peer URLs updated first, then recreated; data kept."""
    from apps.ordering import spec as ospec

    real_command = ospec.etcd_command

    def generation_1(*, network: str, **kwargs) -> list[str]:
        cmd = real_command(network=network, **kwargs)[5:]  # without the wrapper
        cmd = [arg.replace(f".{network}:2380", ":2380") for arg in cmd]
        return [*cmd, "--listen-peer-urls=http://0.0.0.0:2380"]

    monkeypatch.setattr(ospec, "etcd_command", generation_1)
    monkeypatch.setattr(ospec, "GENERATION", "1")
    services.ordering_ensure()
    names = [m.name for m in OrderingMember.objects.order_by("index")]
    assert {m["name"]: m["peerURLs"] for m in _root().member_list()} == {n: [f"http://{n}:2380"] for n in names}
    _root().put("/bsn/test/kept", "1")
    monkeypatch.undo()

    report = services.ordering_heal()
    assert sorted(report["peer_urls_updated"]) == names, report
    assert sorted(report["upgraded"]) == names, report  # recreated one at a time, same volumes
    assert wait_until(lambda: services.ordering_heal()["state"] == OrderingCluster.State.HEALTHY, 60, 0.5)
    net = ordering_network_name(ordering)
    assert {m["name"]: m["peerURLs"] for m in _root().member_list()} == {n: [f"http://{n}.{net}:2380"] for n in names}
    for c in _containers(docker_engine, ordering):
        assert c.labels["io.bsn.generation"] == "2"
        assert c.attrs["Config"]["Cmd"][:3] == ["python3", "-m", "bsn.ledger.etcd_member"]
    assert _root().get("/bsn/test/kept").value == b"1"
    _root().put("/bsn/test/after", "2")
    assert services.ordering_heal()["peer_urls_updated"] == []


def test_all_members_lost_is_a_clear_error_not_a_crash(ordering, docker_engine):
    """Every member's disk gone (found by the bench, which removed an installation's objects
    between two figures): ensuring the service says what is wrong instead of an IndexError
    from building one member's spec with the other members' names only."""
    services.ordering_ensure()
    for member in OrderingMember.objects.order_by("index"):
        docker_engine.containers.get(member.name).remove(force=True)
        docker_engine.volumes.get(f"{member.name}-data").remove(force=True)
    with pytest.raises(Exception) as caught:
        services.ordering_ensure()
    assert not isinstance(caught.value, IndexError), caught.value
    assert "ordering" in str(caught.value).lower() or "etcd" in str(caught.value).lower(), caught.value


def test_a_recent_healthy_check_stands_while_every_member_answers(ordering, docker_engine, monkeypatch):
    """Provisioning's ensure within ensure_fresh() seconds of a check that found the cluster healthy
    asks each member for its status and nothing else: no engine call, no cluster lock. A
    member that stopped answering (killed meanwhile) sends it down the full path, which
    starts the member again; an older check does too."""
    from datetime import timedelta

    from django.utils import timezone

    services.ordering_ensure()
    with _engine_forbidden(monkeypatch) as asked:
        services.ordering_ensure()
    assert asked == []

    member = OrderingMember.objects.order_by("index").first()
    docker_engine.containers.get(member.name).kill()
    assert wait_until(lambda: not services.member_health(member.endpoint), 10)
    services.ordering_ensure()  # within the window, but one member does not answer: the full path
    assert docker_engine.containers.get(member.name).status == "running"

    checked = timezone.now() - timedelta(seconds=services.ensure_fresh() + 1)
    OrderingCluster.objects.update(last_checked_at=checked)
    services.ordering_ensure()  # every member answers, but the last check is too old
    assert OrderingCluster.objects.get().last_checked_at > checked


def test_a_full_check_never_runs_beside_a_heal(ordering, docker_engine, monkeypatch):
    """``ordering_ensure``'s full path and ``ordering_heal`` hold the same lease on the
    cluster row: while a heal holds it, a full check waits (and says so when the wait runs
    out) without touching an engine; while a full check holds it, a heal skips. Before, the
    check took only the row lock, which a heal never takes: both could restart one member."""
    from datetime import timedelta

    from django.utils import timezone

    services.ordering_ensure()
    stale = timezone.now() - timedelta(seconds=services.ensure_fresh() + 1)
    OrderingCluster.objects.update(last_checked_at=stale)  # the fast path does not apply
    held = timezone.now() + timedelta(seconds=60)
    OrderingCluster.objects.update(heal_lease_until=held)  # a heal elsewhere holds the lease
    with _engine_forbidden(monkeypatch) as asked:
        with pytest.raises(services.OrderingNotReady, match="heal of the ordering service"):
            services.ordering_ensure(timeout=0.3)
    assert asked == []
    assert OrderingCluster.objects.get().heal_lease_until == held  # not ours: left alone

    OrderingCluster.objects.update(heal_lease_until=None)  # that heal ended
    reports = []
    start_member = services._start_member

    def heal_meanwhile(*args, **kwargs):
        reports.append(services.ordering_heal(wait=0))
        return start_member(*args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(services, "_start_member", heal_meanwhile)
        cluster = services.ordering_ensure()
    assert cluster.state == OrderingCluster.State.HEALTHY
    assert reports and all(r.get("skipped") and r["members"] == 3 and r["restarted"] == [] for r in reports)
    row = OrderingCluster.objects.get()
    assert row.heal_lease_until is None and row.last_checked_at > stale  # given back; the check ran
    assert services.ordering_heal(wait=0).get("skipped") is None

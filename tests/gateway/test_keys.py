"""App and node keys: generated with the app, encrypted at rest, never shown, given to nodes."""

from __future__ import annotations

import json
import logging
import sys
import types

import pytest

from apps.chainapps import provisioning
from apps.chainapps.keys import key_private, public_key_valid
from apps.chainapps.models import ChainApp, LedgerNode, Operation
from apps.chainapps.node_auth import node_credential
from apps.chainapps.node_config import CAMPAIGN_STAGGER_MS, node_config
from apps.common.crypto import decrypt_secret, encrypt_secret
from apps.regions.models import Region
from apps.runtime.base import Networks
from apps.runtime.spec import NodeStatus
from bsn.ledger.crypto import public_key_of
from tests.api.conftest import assert_problem
from tests.factories import RegionFactory

pytestmark = pytest.mark.django_db


def _private_parts(app: ChainApp) -> set[str]:
    keys = {key_private(app.admin_private_key_encrypted)}
    keys |= {key_private(n.private_key_encrypted) for n in app.nodes.all()}
    return keys


def test_create_generates_keys_encrypted_at_rest(owner_client, regions, caplog):
    caplog.set_level(logging.DEBUG)
    resp = owner_client.post("/api/v1/apps", {"name": "keyed", "regions": ["cn-beijing", "cn-shanghai"]}, format="json")
    assert resp.status_code == 202, resp.content
    app = ChainApp.objects.get(pk=resp.json()["app"])
    assert app.ordering == "etcd"
    assert public_key_valid(app.admin_public_key)
    assert public_key_of(key_private(app.admin_private_key_encrypted)) == app.admin_public_key
    nodes = list(app.nodes.all())
    assert len(nodes) == 2 and len({n.public_key for n in nodes}) == 2
    for node in nodes:
        assert public_key_of(key_private(node.private_key_encrypted)) == node.public_key

    privates = _private_parts(app)
    # At rest: only ciphertext, which does not contain the key.
    stored = json.dumps(
        list(ChainApp.objects.filter(pk=app.pk).values()) + list(LedgerNode.objects.filter(app=app).values()),
        default=str,
    )
    assert not any(p in stored for p in privates)
    # Never in an API response or a log line.
    texts = [
        resp.content.decode(),
        owner_client.get(f"/api/v1/apps/{app.pk}").content.decode(),
        owner_client.get(f"/api/v1/apps/{app.pk}/nodes").content.decode(),
        owner_client.get(f"/api/v1/operations/{resp.json()['id']}").content.decode(),
        owner_client.get("/api/v1/audit-events").content.decode(),
        caplog.text,
    ]
    for text in texts:
        assert not any(p in text for p in privates)
        assert "private_key_encrypted" not in text
    detail = owner_client.get(f"/api/v1/apps/{app.pk}").json()
    assert detail["admin_public_key"] == app.admin_public_key and detail["ordering"] == "etcd"
    listed = owner_client.get(f"/api/v1/apps/{app.pk}/nodes").json()["results"]
    assert {n["public_key"] for n in listed} == {n.public_key for n in nodes}


def test_secrets_round_trip_and_refuse_foreign_ciphertext(settings):
    token = encrypt_secret("seed")
    assert token != "seed" and decrypt_secret(token) == "seed"
    settings.SECRET_KEY = "another-installation"
    with pytest.raises(ValueError):
        decrypt_secret(token)
    settings.SECRET_KEY_FALLBACKS = ["test-only-not-secret"]
    assert decrypt_secret(token) == "seed"  # rotation keeps old secrets readable


def test_ordering_is_solo_for_one_process_region_and_multi_process_is_refused(owner_client, db):
    RegionFactory(code="local-a", driver=Region.Driver.PROCESS)
    RegionFactory(code="local-b", driver=Region.Driver.PROCESS)
    resp = owner_client.post("/api/v1/apps", {"name": "solo", "regions": ["local-a"]}, format="json")
    assert resp.status_code == 202
    assert ChainApp.objects.get(pk=resp.json()["app"]).ordering == "solo"
    before = ChainApp.objects.count()
    resp = owner_client.post("/api/v1/apps", {"name": "multi", "regions": ["local-a", "local-b"]}, format="json")
    body = assert_problem(resp, 400, "invalid")
    assert "etcd" in body["detail"] and "local-a, local-b" in body["detail"] and "process driver" in body["detail"]
    assert ChainApp.objects.count() == before


def test_node_env_follows_the_protocol_page(owner, regions):
    from tests.api.conftest import make_app

    RegionFactory(code="local-a", driver=Region.Driver.PROCESS)
    app = make_app(owner, "envy", regions=("local-a",), contract_template="asset", contract_params={"issuer": "bank"})
    node = app.nodes.get()
    env, secrets = node_config(node)
    assert env["BSN_CONTRACT"] == "asset"
    assert json.loads(env["BSN_CONTRACT_PARAMS"]) == {"issuer": "bank"}
    assert public_key_of(secrets["BSN_NODE_PRIVATE_KEY"]) == node.public_key
    assert set(secrets) == {"BSN_NODE_PRIVATE_KEY", "BSN_NODE_API_CREDENTIAL"}  # files, never the environment
    assert env["BSN_ADMIN_PUBLIC_KEY"] == app.admin_public_key
    assert json.loads(env["BSN_NODE_KEYS"]) == {str(node.pk): node.public_key}
    assert env["BSN_ORDERING"] == "solo"
    assert not any(k.startswith("BSN_ETCD") for k in env)

    spec = provisioning.node_spec(node)
    assert spec.env["BSN_NODE_ID"] == str(node.pk) and spec.env["BSN_APP_ID"] == str(app.pk)
    assert not set(secrets.values()) & set(spec.env.values())
    for value in secrets.values():
        assert value not in repr(spec)  # specs end up in logs and tracebacks
    assert provisioning.node_spec(node, configured=False).secrets == {}


@pytest.fixture
def fake_ordering(monkeypatch):
    """apps.ordering.services stand-in that records calls (the real one is another app)."""
    calls: list[tuple] = []
    module = types.ModuleType("apps.ordering.services")
    module.ordering_ensure = lambda: calls.append(("ensure",))
    module.ordering_attach = lambda network, region=None: calls.append(("attach", network))

    def attach_begin(network, region=None):  # the connects start before the node; waited for after it
        assert region is not None  # only the members on the node's engine can join its network
        calls.append(("attach", network))
        return lambda: calls.append(("attached",)) or []

    module.ordering_attach_begin = attach_begin
    module.ordering_app_credentials = lambda app: calls.append(("credentials",))
    module.ordering_node_env = lambda app, node, creds=None: {
        "BSN_ETCD_ENDPOINTS": "http://etcd-0:2379",
        "BSN_ETCD_USER": f"app-{app.pk}",
        "BSN_ETCD_PASSWORD": "pw",
        "BSN_ETCD_PREFIX": f"/bsn/apps/{app.pk}/",
    }
    package = types.ModuleType("apps.ordering")
    package.services = module
    monkeypatch.setitem(sys.modules, "apps.ordering", package)
    monkeypatch.setitem(sys.modules, "apps.ordering.services", module)
    return calls


class RecordingDriver:
    """Records what provisioning asks of a Docker-like driver (with Networks, as it declares)."""

    name = "docker"
    CAPABILITIES = (Networks,)

    def __init__(self, calls):
        self.calls = calls

    # The app's internal peer network (tested with the real engine elsewhere): not recorded.
    def ensure_internal_network(self, name, labels):
        pass

    def connect_to_network(self, container_name, network_name, *, installation_id):
        return True

    def ensure_network(self, spec):
        self.calls.append(("network", spec.network))
        return "net-id"

    def ensure_node(self, spec):
        self.calls.append(("node", spec.name, spec.env.get("BSN_ETCD_PREFIX")))
        return NodeStatus(name=spec.name, state="running", runtime_id="c1", endpoint="http://127.0.0.1:1")


def test_etcd_node_step_reaches_ordering_before_the_node_and_twice_is_safe(
    owner, regions, fake_ordering, monkeypatch, django_capture_on_commit_callbacks
):
    from tests.api.conftest import make_app

    with django_capture_on_commit_callbacks(execute=False):
        app = make_app(owner, "etcd-app", regions=("cn-beijing", "cn-shanghai"))
    node = app.nodes.order_by("region__code").first()
    env, secrets = node_config(node)
    assert env["BSN_ORDERING"] == "etcd" and env["BSN_ETCD_PREFIX"] == f"/bsn/apps/{app.pk}/"
    assert "BSN_ETCD_PASSWORD" not in env and secrets["BSN_ETCD_PASSWORD"] == "pw"
    other = app.nodes.exclude(pk=node.pk).get()
    assert json.loads(secrets["BSN_PEER_CREDENTIALS"]) == {env["BSN_PEERS"]: node_credential(other)}
    assert set(json.loads(env["BSN_NODE_KEYS"])) == {str(n.pk) for n in app.nodes.all()}
    fake = sys.modules["apps.ordering.services"]
    real_env = fake.ordering_node_env
    fake.ordering_node_env = lambda *a, **k: {**real_env(*a, **k), "BSN_ETCD_TOKEN": "t"}
    handed_env, handed = node_config(node)  # a claim with the app's etcd token: a file too
    assert "BSN_ETCD_TOKEN" not in handed_env and handed["BSN_ETCD_TOKEN"] == "t"
    fake.ordering_node_env = real_env
    # First campaigns for proposer staggered by rank (region code): the first at once.
    assert env["BSN_ETCD_CAMPAIGN_DELAY_MS"] == "0"
    assert node_config(other)[0]["BSN_ETCD_CAMPAIGN_DELAY_MS"] == str(CAMPAIGN_STAGGER_MS)

    fake_ordering.clear()
    monkeypatch.setattr(provisioning, "driver_for_region", lambda region: RecordingDriver(fake_ordering))
    monkeypatch.setattr(provisioning, "wait_healthy", lambda *a, **k: {})
    op = Operation.objects.get(app=app)
    claimed, _ = provisioning.operation_claim(str(op.pk))
    assert provisioning.node_step_run(str(op.pk), str(node.pk)) == "done"
    spec = provisioning.node_spec(node, configured=False)
    assert fake_ordering == [
        ("ensure",),
        ("credentials",),
        ("network", spec.network),
        ("attach", spec.network),
        ("node", spec.name, f"/bsn/apps/{app.pk}/"),
        ("attached",),
    ]
    # A redelivered step repeats the same idempotent calls, in the same order.
    Operation.objects.filter(pk=op.pk).update(steps={**claimed.steps, str(node.pk): {"state": "pending", "error": ""}})
    fake_ordering.clear()
    assert provisioning.node_step_run(str(op.pk), str(node.pk)) == "done"
    assert [c[0] for c in fake_ordering] == ["ensure", "credentials", "network", "attach", "node", "attached"]

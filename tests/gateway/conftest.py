"""Gateway fixtures: a tenant app whose node is a SimLedger (tests/fakenode.py)."""

from __future__ import annotations

import pytest

from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.keys import key_private
from apps.chainapps.models import ChainApp, Framework, LedgerNode
from apps.chainapps.node_auth import node_credential
from bsn.client import generate_key
from tests.api.conftest import finish_open_operations, make_app
from tests.fakenode import SimLedger


@pytest.fixture(autouse=True)
def builtin_framework(db):
    return ensure_builtin_framework(Framework)


@pytest.fixture
def app(owner, regions) -> ChainApp:
    """Tenant A's app on one region, provisioned (its node is attached by ``sim``)."""
    app = make_app(owner, "gw", regions=("cn-beijing",))
    finish_open_operations(app.pk)
    ChainApp.objects.filter(pk=app.pk).update(status=ChainApp.Status.RUNNING)
    return ChainApp.objects.get(pk=app.pk)


def speak_as(fake, node: LedgerNode) -> None:
    """Give a FakeNode ``node``'s credential and identity: the gateway then believes it."""
    fake.credential = node_credential(node)
    fake.identity = (str(node.app_id), str(node.pk), key_private(node.private_key_encrypted))


def attach_sim(node: LedgerNode) -> SimLedger:
    ledger = SimLedger(
        app_id=str(node.app_id),
        node_id=str(node.pk),
        node_private_b64=key_private(node.private_key_encrypted),
        admin_public_key=node.app.admin_public_key,
        credential=node_credential(node),
    )
    LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.RUNNING, endpoint=ledger.endpoint)
    return ledger


@pytest.fixture
def sim(app):
    ledger = attach_sim(app.nodes.get())
    yield ledger
    ledger.close()


@pytest.fixture
def alice_key():
    return generate_key()


@pytest.fixture
def alice(owner_client, app, sim, alice_key):
    """App user 'alice' registered through the API (so the SimLedger knows her key)."""
    resp = owner_client.post(
        f"/api/v1/apps/{app.pk}/users", {"name": "alice", "public_key": alice_key[1]}, format="json"
    )
    assert resp.status_code == 201, resp.content
    return resp.json()

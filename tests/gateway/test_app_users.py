"""App users: validation, roles, ledger confirmation, retries that finish a pending change."""

from __future__ import annotations

import base64

import pytest

from apps.audit.models import AuditEvent
from apps.chainapps.models import LedgerNode
from apps.gateway import services
from apps.gateway.models import AppUser
from bsn.client import generate_key
from tests.api.conftest import assert_problem
from tests.fakenode import canonical

pytestmark = pytest.mark.django_db


def users_url(app) -> str:
    return f"/api/v1/apps/{app.pk}/users"


def test_create_registers_the_user_on_the_ledger_with_an_admin_signed_config_tx(owner_client, app, sim, alice_key):
    resp = owner_client.post(users_url(app), {"name": "alice", "public_key": alice_key[1]}, format="json")
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["status"] == "active" and body["name"] == "alice" and body["public_key"] == alice_key[1]
    assert resp["Location"].endswith(f"/api/v1/apps/{app.pk}/users/{body['id']}")
    assert sim.users["alice"] == alice_key[1]
    (block,) = sim.blocks
    (envelope,) = block["txs"]
    tx = envelope["tx"]
    assert tx["contract"] == "_config" and tx["function"] == "user.add" and tx["signer"] == "_admin"
    assert tx["args"] == {"name": "alice", "public_key": alice_key[1]}
    assert tx["nonce"] == f"{body['id'].replace('-', '')}-add"
    assert isinstance(tx["timestamp"], int) and tx["app"] == str(app.pk)
    user = AppUser.objects.get(pk=body["id"])
    assert user.pending_tx is None and user.activated_at is not None
    assert AuditEvent.objects.filter(action="appuser.create", object_id=str(user.pk)).exists()
    # listed and retrievable
    listed = owner_client.get(users_url(app)).json()
    assert [u["name"] for u in listed["results"]] == ["alice"]
    assert owner_client.get(f"{users_url(app)}/{user.pk}").json()["status"] == "active"
    assert canonical(tx)  # the SimLedger verified the admin signature over canonical(tx)


def _key_of(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"name": "_admin"}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": ""}, "name"),
        ({"public_key": "not base64!"}, "public_key"),
        ({"public_key": _key_of(b"\x01" * 31)}, "public_key"),  # 31 bytes
        ({"public_key": _key_of(b"\xff" * 32)}, "public_key"),  # not a curve point
        ({"public_key": _key_of(b"\x01" + bytes(31))}, "public_key"),  # the identity: small order
        ({"public_key": generate_key()[1].rstrip("=")}, "public_key"),  # padding is required
        ({"private_key": "x"}, "private_key"),  # unknown fields are refused
    ],
)
def test_bad_input_is_400_and_nothing_reaches_the_ledger(owner_client, app, sim, payload, field):
    body = {"name": "bob", "public_key": generate_key()[1], **payload}
    problem = assert_problem(owner_client.post(users_url(app), body, format="json"), 400, "invalid")
    assert field in problem["errors"]
    assert sim.node.requests == [] and not AppUser.objects.exists()


def test_duplicate_name_is_409(owner_client, app, sim, alice):
    resp = owner_client.post(users_url(app), {"name": "alice", "public_key": generate_key()[1]}, format="json")
    assert_problem(resp, 409, "duplicate-name")
    again = owner_client.post(users_url(app), {"name": "alice", "public_key": alice["public_key"]}, format="json")
    assert_problem(again, 409, "duplicate-name")  # active: nothing to finish


def test_roles_viewer_reads_developer_writes(client_with_role, app, sim, alice):
    viewer = client_with_role("viewer")
    assert viewer.get(users_url(app)).status_code == 200
    assert viewer.get(f"{users_url(app)}/{alice['id']}").status_code == 200
    assert_problem(viewer.post(users_url(app), {"name": "v", "public_key": generate_key()[1]}, format="json"), 403)
    assert_problem(viewer.delete(f"{users_url(app)}/{alice['id']}"), 403)
    developer = client_with_role("developer")
    assert (
        developer.post(users_url(app), {"name": "dev", "public_key": generate_key()[1]}, format="json").status_code
        == 201
    )
    assert developer.delete(f"{users_url(app)}/{alice['id']}").status_code == 200


def test_revoke_is_a_config_tx_and_idempotent(owner_client, app, sim, alice):
    url = f"{users_url(app)}/{alice['id']}"
    resp = owner_client.delete(url)
    assert resp.status_code == 200, resp.content
    assert resp.json()["status"] == "revoked" and resp.json()["revoked_at"]
    assert "alice" in sim.revoked
    last = sim.blocks[-1]["txs"][0]["tx"]
    assert last["function"] == "user.revoke" and last["args"] == {"name": "alice"}
    assert last["nonce"].endswith("-revoke")
    blocks = len(sim.blocks)
    assert owner_client.delete(url).json()["status"] == "revoked"
    assert len(sim.blocks) == blocks, "revoking twice sends nothing"
    # the name stays taken
    assert_problem(
        owner_client.post(users_url(app), {"name": "alice", "public_key": generate_key()[1]}, format="json"),
        409,
        "duplicate-name",
    )


def test_no_healthy_node_is_503_and_the_same_request_finishes_it(owner_client, app, sim, alice_key):
    node = app.nodes.get()
    LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.UNHEALTHY)
    payload = {"name": "alice", "public_key": alice_key[1]}
    body = assert_problem(owner_client.post(users_url(app), payload, format="json"), 503, "no-healthy-node")
    assert app.name in body["detail"] and "pending" in body["detail"]
    user = AppUser.objects.get(name="alice")
    assert user.status == "pending" and user.pending_tx is not None
    assert owner_client.get(users_url(app)).json()["results"][0]["status"] == "pending"
    assert_problem(owner_client.delete(f"{users_url(app)}/{user.pk}"), 409, "user-pending")

    LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.RUNNING)
    resp = owner_client.post(users_url(app), payload, format="json")
    assert resp.status_code == 201 and resp.json()["id"] == str(user.pk)
    assert sim.blocks[0]["txs"][0] == user.pending_tx, "the retry re-sends the very same envelope"


def test_a_change_committed_but_unanswered_is_found_by_its_receipt(owner_client, app, sim, alice_key, monkeypatch):
    """The node committed user.add, the answer was lost; the retry meets replayed_nonce."""
    real_submit = services.gateway_submit
    calls = []

    def lossy(*, app, envelope):
        calls.append(envelope)
        real_submit(app=app, envelope=envelope)  # committed on the ledger …
        if len(calls) == 1:
            raise services.NodeTimeout("lost answer")  # … but the answer is lost
        return real_submit(app=app, envelope=envelope)

    monkeypatch.setattr(services, "gateway_submit", lossy)
    payload = {"name": "alice", "public_key": alice_key[1]}
    body = assert_problem(owner_client.post(users_url(app), payload, format="json"), 503, "ledger-unavailable")
    assert "send the same request again" in body["detail"]
    resp = owner_client.post(users_url(app), payload, format="json")
    assert resp.status_code == 201, resp.content
    assert len(sim.blocks) == 1, "applied once"
    assert calls[0] == calls[1]


def test_a_refused_change_leaves_nothing_behind(owner_client, app, sim, alice_key):
    sim.users["alice"] = generate_key()[1]  # the ledger already has an alice: user.add fails
    resp = owner_client.post(users_url(app), {"name": "alice", "public_key": alice_key[1]}, format="json")
    body = assert_problem(resp, 503, "ledger-refused")
    assert "user exists" in body["detail"]
    assert not AppUser.objects.exists()


def test_ordering_down_keeps_revoke_pending_until_retried(owner_client, app, sim, alice):
    sim.down_ordering = True
    url = f"{users_url(app)}/{alice['id']}"
    body = assert_problem(owner_client.delete(url), 503, "ledger-unavailable")
    assert "revoking" in body["detail"]
    assert AppUser.objects.get(pk=alice["id"]).status == "revoking"
    sim.down_ordering = False
    assert owner_client.delete(url).json()["status"] == "revoked"


def test_users_of_a_deleted_app_cannot_be_added(owner_client, app, sim, alice_key):
    owner_client.delete(f"/api/v1/apps/{app.pk}")
    resp = owner_client.post(users_url(app), {"name": "alice", "public_key": alice_key[1]}, format="json")
    assert_problem(resp, 409, "app-deleted")


def test_another_tenants_app_users_are_404(outsider_client, app, sim, alice):
    assert_problem(outsider_client.get(users_url(app)), 404, "not-found")
    assert_problem(outsider_client.get(f"{users_url(app)}/{alice['id']}"), 404, "not-found")
    resp = outsider_client.post(users_url(app), {"name": "eve", "public_key": generate_key()[1]}, format="json")
    assert_problem(resp, 404, "not-found")
    assert len(sim.blocks) == 1  # only alice's registration

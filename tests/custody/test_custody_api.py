"""Key custody through the API against a SimLedger node: create, sign, export once, revoke,
roles, other tenants, bad input, tampered ciphertexts, quotas, secrecy of the key."""

from __future__ import annotations

import json
import logging

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from apps.audit.models import AuditEvent
from apps.chainapps.models import ChainApp, LedgerNode
from apps.custody.models import CustodyKey, TenantDataKey
from apps.gateway.models import AppUser
from bsn.client import Client, generate_key
from bsn.ledger.canonical import canonical
from bsn.ledger.crypto import b64encode, public_key_of, verify
from tests.api.conftest import assert_problem
from tests.conftest import redis_url  # noqa: F401 - the fixture
from tests.custody.conftest import master

pytestmark = pytest.mark.django_db


def users_url(app) -> str:
    return f"/api/v1/apps/{app.pk}/users"


@pytest.fixture
def carol(owner_client, app, sim, k1):
    resp = owner_client.post(users_url(app), {"name": "carol", "mode": "custody"}, format="json")
    assert resp.status_code == 201, resp.content
    return resp.json()


def sign_url(app, user) -> str:
    return f"{users_url(app)}/{user['id']}/transactions"


def export_url(app, user) -> str:
    return f"{users_url(app)}/{user['id']}/export"


PUT = {"contract": "kv", "function": "put", "args": {"key": "greeting", "value": "ni hao"}}


def test_custody_user_is_registered_with_a_platform_key_and_signs_a_kv_put(owner_client, app, sim, carol):
    assert carol["mode"] == "custody" and carol["status"] == "active" and carol["exported_at"] is None
    assert sim.users["carol"] == carol["public_key"], "the ledger knows the platform-generated public key"
    assert set(carol) >= {"public_key"} and not {"private_key", "private_key_pem"} & set(carol)
    key = CustodyKey.objects.get(user_id=carol["id"])
    assert key.data_key.master_key_id == "k1" and len(bytes(key.ciphertext)) == 12 + 32 + 16

    resp = owner_client.post(sign_url(app, carol), PUT, format="json")
    assert resp.status_code == 200, resp.content
    receipt = resp.json()
    assert receipt["status"] == "committed" and sim.kv["greeting"] == "ni hao"
    (envelope,) = sim.blocks[-1]["txs"]
    tx = envelope["tx"]
    assert tx["signer"] == "carol" and tx["app"] == str(app.pk) and tx["args"] == PUT["args"]
    assert verify(carol["public_key"], envelope["sig"], canonical(tx))
    event = AuditEvent.objects.get(action="custody.sign")
    assert event.data["tx_id"] == receipt["tx_id"] and event.data["user"] == "carol"
    assert event.actor_label == "alice" and event.object_id == carol["id"]


def test_the_same_nonce_twice_is_the_ledgers_replayed_nonce_and_applies_once(owner_client, app, sim, carol):
    body = {**PUT, "nonce": "order-42"}
    assert owner_client.post(sign_url(app, carol), body, format="json").json()["status"] == "committed"
    blocks = len(sim.blocks)
    again = owner_client.post(sign_url(app, carol), {**body, "args": {"key": "greeting", "value": "x"}}, format="json")
    assert_problem(again, 400, "replayed_nonce")
    assert len(sim.blocks) == blocks and sim.kv["greeting"] == "ni hao"


def test_a_retry_of_a_pending_custody_create_finishes_it_with_the_stored_key(owner_client, app, sim, k1):
    node = app.nodes.get()
    LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.UNHEALTHY)
    body = {"name": "dave", "mode": "custody"}
    assert_problem(owner_client.post(users_url(app), body, format="json"), 503, "no-healthy-node")
    pending = AppUser.objects.get(name="dave")
    assert pending.status == "pending" and CustodyKey.objects.filter(user=pending).exists()
    # an upload-mode request for the same pending name is not the same registration
    upload = {"name": "dave", "public_key": generate_key()[1]}
    assert_problem(owner_client.post(users_url(app), upload, format="json"), 409, "duplicate-name")
    LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.RUNNING)
    resp = owner_client.post(users_url(app), body, format="json")
    assert resp.status_code == 201, resp.content
    assert resp.json()["public_key"] == pending.public_key == sim.users["dave"]
    assert CustodyKey.objects.count() == 1


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"name": "x", "mode": "custody", "public_key": "AAAA"}, "public_key"),
        ({"name": "x"}, "public_key"),  # upload (the default) needs it
        ({"name": "x", "mode": "vault"}, "mode"),
        ({"name": "_admin", "mode": "custody"}, "name"),
        ({"name": "x", "mode": "custody", "private_key": "x"}, "private_key"),
    ],
)
def test_bad_create_input_is_400_and_nothing_is_made(owner_client, app, sim, k1, payload, field):
    problem = assert_problem(owner_client.post(users_url(app), payload, format="json"), 400, "invalid")
    assert field in problem["errors"]
    assert not AppUser.objects.exists() and not TenantDataKey.objects.exists() and sim.node.requests == []


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"contract": "_config", "function": "user.add", "args": {"name": "eve", "public_key": "x"}}, "contract"),
        ({"contract": "kv", "function": "put", "args": []}, "args"),
        ({"contract": "kv", "function": "put", "args": {"key": "k", "value": 1.5}}, "args"),  # no floats
        ({"contract": "kv", "function": "put", "nonce": "x" * 65}, "nonce"),
        ({"function": "put"}, "contract"),
        ({**PUT, "signer": "_admin"}, "signer"),
        ({**PUT, "sig": "AAAA"}, "sig"),
    ],
)
def test_bad_sign_input_is_400_and_nothing_is_signed(owner_client, app, sim, carol, payload, field):
    blocks, events = len(sim.blocks), AuditEvent.objects.count()
    problem = assert_problem(owner_client.post(sign_url(app, carol), payload, format="json"), 400, "invalid")
    assert field in problem["errors"]
    assert len(sim.blocks) == blocks and AuditEvent.objects.count() == events


def test_an_unknown_function_is_the_nodes_rejection_code(owner_client, app, sim, carol):
    resp = owner_client.post(sign_url(app, carol), {"contract": "kv", "function": "drop"}, format="json")
    assert_problem(resp, 400, "unknown_function")


def test_upload_mode_users_cannot_be_signed_for_nor_exported(owner_client, app, sim, alice, k1):
    blocks = len(sim.blocks)
    body = assert_problem(owner_client.post(sign_url(app, alice), PUT, format="json"), 409, "user-not-in-custody")
    assert "upload mode" in body["detail"] and "public key" in body["detail"]
    assert_problem(owner_client.post(export_url(app, alice)), 409, "user-not-in-custody")
    assert len(sim.blocks) == blocks and not AuditEvent.objects.filter(action__startswith="custody.").exists()


def test_roles_viewer_reads_developer_signs_admin_exports(client_with_role, app, sim, carol):
    viewer, developer, admin = (client_with_role(role) for role in ("viewer", "developer", "admin"))
    assert viewer.get(f"{users_url(app)}/{carol['id']}").json()["mode"] == "custody"
    assert_problem(viewer.post(sign_url(app, carol), PUT, format="json"), 403)
    assert_problem(viewer.post(users_url(app), {"name": "v", "mode": "custody"}, format="json"), 403)
    assert_problem(viewer.post(export_url(app, carol)), 403)
    assert_problem(developer.post(export_url(app, carol)), 403)
    assert not AuditEvent.objects.filter(action__startswith="custody.").exists() and "greeting" not in sim.kv
    assert developer.post(sign_url(app, carol), PUT, format="json").json()["status"] == "committed"
    assert admin.post(export_url(app, carol)).status_code == 200


def test_another_tenant_gets_404_and_nothing_happens(outsider_client, app, sim, carol):
    blocks = len(sim.blocks)
    for url in (sign_url(app, carol), export_url(app, carol)):
        assert_problem(outsider_client.post(url, PUT, format="json"), 404, "not-found")
    assert len(sim.blocks) == blocks and AppUser.objects.get(pk=carol["id"]).exported_at is None
    assert not AuditEvent.objects.filter(action__startswith="custody.").exists()


def test_export_once_then_409_and_the_key_is_the_users(owner_client, app, sim, carol, caplog):
    caplog.set_level(logging.DEBUG)
    resp = owner_client.post(export_url(app, carol))
    assert resp.status_code == 200, resp.content
    assert resp["Cache-Control"] == "no-store"
    exported = resp.json()
    private = exported["private_key"]
    assert public_key_of(private) == carol["public_key"] == exported["public_key"]
    pem_key = load_pem_private_key(exported["private_key_pem"].encode(), password=None)
    assert b64encode(pem_key.public_key().public_bytes_raw()) == carol["public_key"]
    assert AppUser.objects.get(pk=carol["id"]).exported_at is not None
    event = AuditEvent.objects.get(action="custody.export")
    assert event.object_id == carol["id"] and event.actor_label == "alice"

    again = assert_problem(owner_client.post(export_url(app, carol)), 409, "key-already-exported")
    assert private not in json.dumps(again)
    # the tenant now signs with it itself, and the platform still can too
    client = Client("http://unused", "token", str(app.pk), "carol", private)
    envelope = client.sign("kv", "put", {"key": "mine", "value": 1})
    assert owner_client.post(f"/api/v1/apps/{app.pk}/transactions", envelope, format="json").status_code == 200
    assert owner_client.post(sign_url(app, carol), PUT, format="json").json()["status"] == "committed"

    # The key appears in that one answer only: not in any other, the audit log or the logs.
    pem_body = "".join(exported["private_key_pem"].splitlines()[1:-1])
    texts = {
        "user": owner_client.get(f"{users_url(app)}/{carol['id']}").content.decode(),
        "users": owner_client.get(users_url(app)).content.decode(),
        "audit api": owner_client.get("/api/v1/audit-events").content.decode(),
        "audit rows": json.dumps(list(AuditEvent.objects.values()), default=str),
        "logs": caplog.text,
        "custody rows": json.dumps(list(CustodyKey.objects.values("user", "data_key", "destroyed_at")), default=str),
    }
    for where, text in texts.items():
        assert private not in text and pem_body not in text, where


def test_the_admin_shows_no_key_material(admin_client, app, sim, carol):
    key = CustodyKey.objects.get(user_id=carol["id"])
    data_key = key.data_key
    pages = [
        "/admin/custody/custodykey/",
        f"/admin/custody/custodykey/{key.pk}/change/",
        "/admin/custody/tenantdatakey/",
        f"/admin/custody/tenantdatakey/{data_key.pk}/change/",
        f"/admin/gateway/appuser/{carol['id']}/change/",
    ]
    secret_bits = {b64encode(bytes(key.ciphertext)), bytes(key.ciphertext).hex(), b64encode(bytes(data_key.wrapped))}
    for page in pages:
        resp = admin_client.get(page)
        assert resp.status_code == 200, page
        text = resp.content.decode()
        assert not any(bit in text for bit in secret_bits), page
    assert "k1" in admin_client.get("/admin/custody/tenantdatakey/").content.decode()


def test_revoke_destroys_the_key_then_signing_and_export_are_refused(owner_client, app, sim, carol):
    resp = owner_client.delete(f"{users_url(app)}/{carol['id']}")
    assert resp.json()["status"] == "revoked"
    key = CustodyKey.objects.get(user_id=carol["id"])
    assert key.ciphertext is None and key.destroyed_at is not None
    blocks = len(sim.blocks)
    body = assert_problem(owner_client.post(sign_url(app, carol), PUT, format="json"), 409, "user-not-active")
    assert "revoked" in body["detail"]
    assert_problem(owner_client.post(export_url(app, carol)), 409, "key-destroyed")
    assert len(sim.blocks) == blocks
    # rotation as for upload users: a new name, the old one revoked
    resp = owner_client.post(users_url(app), {"name": "carol-2", "mode": "custody"}, format="json")
    assert resp.status_code == 201 and resp.json()["public_key"] != carol["public_key"]
    assert owner_client.post(sign_url(app, resp.json()), PUT, format="json").json()["status"] == "committed"
    assert sim.blocks[-1]["txs"][0]["tx"]["signer"] == "carol-2"


def test_a_refused_revoke_keeps_the_key(owner_client, app, sim, carol, monkeypatch):
    from apps.gateway import services

    def refuse(*a, **k):
        raise services.Definitive("failed: no")

    monkeypatch.setattr(services, "submit_until_final", refuse)
    assert_problem(owner_client.delete(f"{users_url(app)}/{carol['id']}"), 503, "ledger-refused")
    assert CustodyKey.objects.get(user_id=carol["id"]).ciphertext is not None
    monkeypatch.undo()
    assert owner_client.post(sign_url(app, carol), PUT, format="json").json()["status"] == "committed"


@pytest.mark.parametrize("what", ["ciphertext", "wrapped data key", "swapped ciphertexts"])
def test_tampered_key_material_is_a_clear_409_and_nothing_is_signed(owner_client, app, sim, carol, what):
    other = owner_client.post(users_url(app), {"name": "erin", "mode": "custody"}, format="json").json()
    key = CustodyKey.objects.get(user_id=carol["id"])
    if what == "ciphertext":
        flipped = bytearray(key.ciphertext)
        flipped[20] ^= 0x01
        CustodyKey.objects.filter(pk=key.pk).update(ciphertext=bytes(flipped))
    elif what == "wrapped data key":
        wrapped = bytearray(key.data_key.wrapped)
        wrapped[-1] ^= 0x80
        TenantDataKey.objects.filter(pk=key.data_key_id).update(wrapped=bytes(wrapped))
    else:  # carol's row holds erin's (valid) ciphertext: bound to erin, it does not open as carol's
        CustodyKey.objects.filter(pk=key.pk).update(ciphertext=CustodyKey.objects.get(user_id=other["id"]).ciphertext)
    blocks, events = len(sim.blocks), AuditEvent.objects.count()
    body = assert_problem(owner_client.post(sign_url(app, carol), PUT, format="json"), 409, "custody-key-unreadable")
    assert body["ref"] and "integrity" in body["detail"]
    assert_problem(owner_client.post(export_url(app, carol)), 409, "custody-key-unreadable")
    assert AppUser.objects.get(pk=carol["id"]).exported_at is None
    assert len(sim.blocks) == blocks and AuditEvent.objects.count() == events


def test_master_rotation_rewraps_data_keys_and_a_missing_master_key_fails_cleanly(
    owner_client, outsider_client, app, sim, carol, k1, settings, regions
):
    """Tenant A (carol) under k1; tenant B's data key under k0. Rotating onto k2 with k1
    configured (k0 not): A is rewrapped, B is reported and keeps k0. With k1 removed A signs
    on; B is a 503 naming the missing master key until k0 is back and B is rewrapped."""
    from django.core.management import CommandError, call_command

    from apps.custody.services import custody_user_create
    from tests.api.conftest import finish_open_operations, make_app
    from tests.gateway.conftest import attach_sim

    k0, k2 = master("k0"), master("k2")
    settings.BSN_CUSTODY_MASTER_KEYS = [k0]
    b_app = make_app(outsider_client.membership, "b-gw", regions=("cn-beijing",))
    finish_open_operations(b_app.pk)
    ChainApp.objects.filter(pk=b_app.pk).update(status=ChainApp.Status.RUNNING)
    b_sim = attach_sim(b_app.nodes.get())
    try:
        frank = custody_user_create(app=b_app, actor=outsider_client.membership.user, name="frank")
        a_key = CustodyKey.objects.get(user_id=carol["id"])
        ciphertext_before = bytes(a_key.ciphertext)

        settings.BSN_CUSTODY_MASTER_KEYS = [k2, k1]
        with pytest.raises(CommandError):
            call_command("bsn_custody", "rotate-master")
        a_key.refresh_from_db()
        assert a_key.data_key.master_key_id == "k2" and a_key.data_key.rewrapped_at is not None
        assert bytes(a_key.ciphertext) == ciphertext_before, "no private key was re-encrypted"
        assert TenantDataKey.objects.get(tenant=b_app.tenant).master_key_id == "k0"
        assert AuditEvent.objects.filter(action="custody.rewrap", tenant=app.tenant).count() == 1

        settings.BSN_CUSTODY_MASTER_KEYS = [k2]  # k1 removed from settings
        assert owner_client.post(sign_url(app, carol), PUT, format="json").json()["status"] == "committed"
        b_url = f"/api/v1/apps/{b_app.pk}/users/{frank.pk}/transactions"
        body = assert_problem(outsider_client.post(b_url, PUT, format="json"), 503, "custody-master-key-missing")
        assert "k0" not in body["detail"] and body["ref"]  # the key id is for staff
        assert b_sim.kv == {}

        settings.BSN_CUSTODY_MASTER_KEYS = [k2, k0]
        call_command("bsn_custody", "rotate-master")
        settings.BSN_CUSTODY_MASTER_KEYS = [k2]
        assert outsider_client.post(b_url, PUT, format="json").json()["status"] == "committed"
        assert b_sim.kv == {"greeting": "ni hao"}
    finally:
        b_sim.close()


def test_custody_signatures_count_against_the_tps_quota(owner_client, app, sim, carol, redis_url):  # noqa: F811
    ChainApp.objects.filter(pk=app.pk).update(tps_quota=1)  # a bucket of one, refilled once a second
    assert owner_client.post(sign_url(app, carol), PUT, format="json").status_code == 200
    blocks = len(sim.blocks)
    refused = owner_client.post(sign_url(app, carol), PUT, format="json")  # well within that second
    body = assert_problem(refused, 429, "tps-quota-exceeded")
    assert body["scope"] == "app" and body["limit_tps"] == 1 and int(refused["Retry-After"]) >= 1
    assert len(sim.blocks) == blocks


def test_with_no_master_keys_configured_they_derive_from_the_secret_key_and_follow_its_rotation(
    owner_client, app, sim, settings
):
    from django.core.management import call_command

    settings.BSN_CUSTODY_MASTER_KEYS = []
    user = owner_client.post(users_url(app), {"name": "gina", "mode": "custody"}, format="json").json()
    first = TenantDataKey.objects.get().master_key_id
    assert first.startswith("sk-")
    assert owner_client.post(sign_url(app, user), PUT, format="json").json()["status"] == "committed"
    # the secret key rotated the documented way: the old one in the fallbacks
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-new-secret-key", [settings.SECRET_KEY]
    assert owner_client.post(sign_url(app, user), PUT, format="json").json()["status"] == "committed"
    call_command("bsn_custody", "rotate-master")
    assert TenantDataKey.objects.get().master_key_id not in (first, "")
    settings.SECRET_KEY_FALLBACKS = []
    assert owner_client.post(sign_url(app, user), PUT, format="json").json()["status"] == "committed"


@pytest.mark.django_db(transaction=True)
def test_two_exports_at_once_hand_the_key_out_once(client_with_role, app, sim, carol):
    """Two admins ask at the same moment: the row lock lets one through, the other is a 409."""
    import threading

    from django.db import connection

    clients = [client_with_role("admin"), client_with_role("owner")]
    barrier, answers = threading.Barrier(2), []

    def export(client):
        try:
            barrier.wait()
            answers.append(client.post(export_url(app, carol)))
        finally:
            connection.close()

    threads = [threading.Thread(target=export, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(a.status_code for a in answers) == [200, 409], [a.content for a in answers]
    assert AuditEvent.objects.filter(action="custody.export").count() == 1


def test_no_custodied_key_stays_in_the_signing_helpers_cache(owner_client, app, sim, carol):
    from bsn.ledger import crypto

    assert owner_client.post(sign_url(app, carol), PUT, format="json").json()["status"] == "committed"
    assert owner_client.post(export_url(app, carol)).status_code == 200
    assert crypto._private.cache_info().currsize == 0

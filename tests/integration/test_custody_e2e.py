"""Key custody end to end on real ledger nodes (process driver, solo ordering, real Celery
worker): a custody user is registered, the platform signs a kv put for it, the value is on
chain signed by that user's key; export once; master-key rotation with the old key removed;
a tenant whose data key was not rewrapped fails cleanly; revoke leaves nothing to sign with."""

from __future__ import annotations

import io
import os

import pytest
from django.core.management import CommandError, call_command

from apps.audit.models import AuditEvent
from apps.custody.models import CustodyKey, TenantDataKey
from bsn.client import Client, ClientError
from bsn.ledger.canonical import canonical
from bsn.ledger.crypto import verify
from tests.api.conftest import assert_problem
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import operation_done

pytestmark = pytest.mark.integration

PUT = {"contract": "kv", "function": "put", "args": {"key": "greeting", "value": "ni hao"}}


def _app(api, region, name: str) -> str:
    resp = api.post("/api/v1/apps", {"name": name, "regions": [region.code]}, format="json")
    assert resp.status_code == 202, resp.content
    assert operation_done(api, resp["Location"])["status"] == "succeeded"
    return resp.json()["app"]


def test_custody_user_signs_on_a_real_node_exports_once_survives_master_rotation_and_is_revoked(
    live_server, make_regions, worker_factory, settings
):
    k0, k1, k2 = (("k0", os.urandom(32)), ("k1", os.urandom(32)), ("k2", os.urandom(32)))
    settings.BSN_CUSTODY_MASTER_KEYS = [k1]
    (region,) = make_regions("process", count=1)
    worker_factory([region])
    tenant = TenantFactory()
    api = _client_for(MembershipFactory(tenant=tenant, role="developer"))
    admin = _client_for(MembershipFactory(tenant=tenant, role="admin"))
    viewer = _client_for(MembershipFactory(tenant=tenant, role="viewer"))
    outsider = _client_for(MembershipFactory(tenant=TenantFactory(), role="owner"))
    app_id = _app(api, region, "custody-e2e")
    users = f"/api/v1/apps/{app_id}/users"

    resp = api.post(users, {"name": "carol", "mode": "custody"}, format="json")
    assert resp.status_code == 201, resp.content
    carol = resp.json()
    assert carol["mode"] == "custody" and carol["status"] == "active"
    sign, export = f"{users}/{carol['id']}/transactions", f"{users}/{carol['id']}/export"

    resp = api.post(sign, PUT, format="json")
    assert resp.status_code == 200, resp.content
    receipt = resp.json()
    assert receipt["status"] == "committed", receipt
    # On chain: the value, and a transaction signed by carol's (platform-held) key.
    assert api.get(f"/api/v1/apps/{app_id}/state/kv/greeting").json()["value"] == "ni hao"
    found = api.get(f"/api/v1/apps/{app_id}/transactions/{receipt['tx_id']}").json()
    assert found["tx"]["tx"]["signer"] == "carol"
    assert verify(carol["public_key"], found["tx"]["sig"], canonical(found["tx"]["tx"]))
    block = api.get(f"/api/v1/apps/{app_id}/blocks/{receipt['height']}").json()
    assert [e["tx"]["signer"] for e in block["txs"]] == ["carol"]
    assert "carol" in api.get(f"/api/v1/apps/{app_id}/chain").json()["users"]
    assert AuditEvent.objects.get(action="custody.sign").data["tx_id"] == receipt["tx_id"]

    # Roles and other tenants: nothing signed, nothing exported.
    assert_problem(viewer.post(sign, PUT, format="json"), 403)
    assert_problem(api.post(export), 403)  # developer: export is for admins
    assert_problem(outsider.post(sign, PUT, format="json"), 404, "not-found")
    assert_problem(outsider.post(export), 404, "not-found")

    # Export once; the exported key signs on its own, through the client.
    resp = admin.post(export)
    assert resp.status_code == 200, resp.content
    private = resp.json()["private_key"]
    assert_problem(admin.post(export), 409, "key-already-exported")
    token = api._credentials["HTTP_AUTHORIZATION"].split()[1]
    client = Client(live_server.url, token, app_id, "carol", private)
    assert client.submit("kv", "put", {"key": "own", "value": "signed by the tenant"})["status"] == "committed"

    # Master rotation: k1 -> k2, then k1 removed from settings; carol still signs. Tenant B's
    # data key is under k0, which is not configured during the rotation: it is not rewrapped,
    # and once k0 is gone B's signing is a clean 503 while A's goes on.
    b_api = _client_for(MembershipFactory(tenant=TenantFactory(), role="owner"))
    b_app = _app(b_api, region, "custody-b")
    settings.BSN_CUSTODY_MASTER_KEYS = [k0]
    frank = b_api.post(f"/api/v1/apps/{b_app}/users", {"name": "frank", "mode": "custody"}, format="json").json()
    frank_sign = f"/api/v1/apps/{b_app}/users/{frank['id']}/transactions"
    settings.BSN_CUSTODY_MASTER_KEYS = [k2, k1]
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError):
        call_command("bsn_custody", "rotate-master", stdout=out, stderr=err)
    assert "1 rewrapped" in out.getvalue() and "1 failed" in out.getvalue(), out.getvalue()
    assert "master key 'k0' is not configured" in err.getvalue()
    ciphertext = bytes(CustodyKey.objects.get(user_id=carol["id"]).ciphertext)
    settings.BSN_CUSTODY_MASTER_KEYS = [k2]
    out = io.StringIO()
    call_command("bsn_custody", "status", stdout=out)
    assert "MISSING" in out.getvalue() and "k0" in out.getvalue()
    assert api.post(sign, {**PUT, "args": {"key": "after", "value": "rotation"}}, format="json").json()["status"] == (
        "committed"
    )
    assert bytes(CustodyKey.objects.get(user_id=carol["id"]).ciphertext) == ciphertext
    assert TenantDataKey.objects.get(tenant=tenant).master_key_id == "k2"
    height = b_api.get(f"/api/v1/apps/{b_app}/chain").json()["height"]
    assert_problem(b_api.post(frank_sign, PUT, format="json"), 503, "custody-master-key-missing")
    assert b_api.get(f"/api/v1/apps/{b_app}/chain").json()["height"] == height, "nothing reached B's chain"

    # Revoke: the ledger refuses carol from then on, and the platform has nothing left to sign with.
    assert api.delete(f"{users}/{carol['id']}").json()["status"] == "revoked"
    assert CustodyKey.objects.get(user_id=carol["id"]).ciphertext is None
    assert_problem(api.post(sign, PUT, format="json"), 409, "user-not-active")
    with pytest.raises(ClientError) as excinfo:
        client.submit("kv", "put", {"key": "after", "value": "revoked"})
    assert excinfo.value.code == "unknown_signer"

    out = io.StringIO()
    call_command("bsn_chain_verify", app_id, stdout=out)
    assert out.getvalue().startswith("ok:"), out.getvalue()
    for app in (app_id, b_app):
        owner = api if app == app_id else b_api
        resp = owner.delete(f"/api/v1/apps/{app}?keep_data=false")
        assert operation_done(owner, resp["Location"])["status"] == "succeeded"

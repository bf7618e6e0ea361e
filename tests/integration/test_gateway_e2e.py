"""A tenant's whole path with the real node on the process driver (solo ordering):

create the app through the API (real Celery worker), register an app user with the
client's key, submit signed kv transactions through the gateway with ``bsn.client``,
read them back, verify the chain, revoke the user (nodes learn it without a restart).
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from apps.chainapps.models import ChainApp, LedgerNode
from apps.chainapps.reconcile import reconcile_region
from bsn.client import Client, ClientError, generate_key
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import operation_done

pytestmark = pytest.mark.integration


def test_signed_transactions_through_the_gateway_on_a_process_node(live_server, make_regions, worker_factory):
    (region,) = make_regions("process", count=1)
    worker_factory([region])
    api = _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))
    resp = api.post("/api/v1/apps", {"name": "e2e", "regions": [region.code]}, format="json")
    assert resp.status_code == 202, resp.content
    app_id = resp.json()["app"]
    assert operation_done(api, resp["Location"])["status"] == "succeeded"
    app = ChainApp.objects.get(pk=app_id)
    assert app.ordering == "solo" and app.status == "running"

    # As the README shows it: the client registers its own user, then signs and sends.
    private, public = generate_key()
    token = api._credentials["HTTP_AUTHORIZATION"].split()[1]
    client = Client(live_server.url, token, app_id, "alice", private)
    registered = client.register()
    assert registered["public_key"] == public
    user_url = f"/api/v1/apps/{app_id}/users/{registered['id']}"

    receipt = client.submit("kv", "put", {"key": "greeting", "value": "ni hao"})
    assert receipt["status"] == "committed", receipt
    assert client.state("kv", "greeting")["value"] == "ni hao"
    assert client.tx(receipt["tx_id"])["receipt"]["height"] == receipt["height"]
    block = client.block(receipt["height"])
    assert [e["tx"]["nonce"] for e in block["txs"]] == [client.tx(receipt["tx_id"])["tx"]["tx"]["nonce"]]
    receipts = client.submit_batch([("kv", "put", {"key": f"k{i}", "value": i}) for i in range(5)])
    assert [r["status"] for r in receipts] == ["committed"] * 5
    chain = client.chain()
    assert chain["ordering"] == "solo" and "alice" in chain["users"]
    assert chain["node_id"] == str(LedgerNode.objects.get(app_id=app_id).pk)

    out = io.StringIO()
    call_command("bsn_chain_verify", app_id, stdout=out)
    assert out.getvalue().startswith("ok:"), out.getvalue()

    reconcile_region(region.code)
    node = LedgerNode.objects.get(app_id=app_id)
    assert node.chain_height == chain["height"] and node.chain_head == chain["head_hash"]
    assert ChainApp.objects.get(pk=app_id).status == "running"

    # Revocation is a ledger transaction: the running node refuses alice at once.
    assert api.delete(user_url).json()["status"] == "revoked"
    with pytest.raises(ClientError) as excinfo:
        client.submit("kv", "put", {"key": "after", "value": "revoked"})
    assert excinfo.value.code == "unknown_signer"

    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    assert operation_done(api, resp["Location"])["status"] == "succeeded"

"""Node facts in the API follow the chain within seconds (issue 9): transactions through
the gateway and reads of the app's nodes queue a refresh on the region's worker, so
`chain_height` is not stuck until the periodic pass (an hour away in these tests)."""

from __future__ import annotations

import pytest

from bsn.client import Client, generate_key
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import operation_done, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def api(transactional_db):
    return _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))


def test_chain_height_follows_transactions_without_a_reconcile_pass(api, make_regions, worker_factory):
    (region,) = make_regions("process")
    worker_factory([region])
    resp = api.post("/api/v1/apps", {"name": "facts", "regions": [region.code]}, format="json")
    assert operation_done(api, resp["Location"])["status"] == "succeeded"
    app_id = resp.json()["app"]
    private, public = generate_key()
    assert (
        api.post(f"/api/v1/apps/{app_id}/users", {"name": "alice", "public_key": public}, format="json").status_code
        == 201
    )
    signer = Client("http://unused", "-", app_id, "alice", private)
    for i in range(3):
        envelope = signer.sign("kv", "put", {"key": f"k{i}", "value": i})
        reply = api.post(f"/api/v1/apps/{app_id}/transactions", envelope, format="json")
        assert reply.status_code == 200 and reply.json()["status"] == "committed", reply.content
    top = reply.json()["height"]

    def fresh():
        (node,) = api.get(f"/api/v1/apps/{app_id}/nodes").json()["results"]
        return node if (node["chain_height"] or 0) >= top and node["chain_head"] else None

    node = wait_for(fresh, timeout=30, interval=0.5, message=f"chain_height {top} in the API")
    assert node["state"] == "running" and node["chain_seen_at"]
    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    assert operation_done(api, resp["Location"])["status"] == "succeeded"

"""Metering end to end: a real ledger node (process driver), a real Celery worker with beat.

The gateway counts the transactions in Redis; beat's flush moves them into UsageHour; beat's
scrape reads the node's own ``bsn_storage_bytes`` from its ``/metrics`` and counts the
seconds it ran — all visible through the usage API and the app's detail.
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from apps.chainapps.models import LedgerNode
from apps.metering.models import NodeMeter, UsageHour
from bsn.client import Client, generate_key
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import node_get, operation_done, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def api(transactional_db):
    return _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))


def node_storage(node) -> int:
    from apps.chainapps.node_auth import node_auth
    from apps.runtime.nodeapi import node_call

    node.refresh_from_db()
    reply = node_call(node.endpoint, "GET", "/metrics", auth=node_auth(node), as_text=True)
    (family,) = [f for f in text_string_to_metric_families(reply.body) if f.name == "bsn_storage_bytes"]
    return int(family.samples[0].value)


def test_beat_flushes_gateway_counts_and_scrapes_a_real_nodes_storage(api, make_regions, worker_factory):
    (region,) = make_regions("process")
    worker_factory(
        [region],
        beat=True,
        env={"BSN_METERING_FLUSH_INTERVAL": "1", "BSN_METERING_SCRAPE_INTERVAL": "1"},
    )
    resp = api.post("/api/v1/apps", {"name": "metered", "regions": [region.code]}, format="json")
    assert operation_done(api, resp["Location"])["status"] == "succeeded"
    app_id = resp.json()["app"]
    private, public = generate_key()
    users = api.post(f"/api/v1/apps/{app_id}/users", {"name": "alice", "public_key": public}, format="json")
    assert users.status_code == 201
    signer = Client("http://unused", "-", app_id, "alice", private)
    sent = 0
    for i in range(3):
        reply = api.post(
            f"/api/v1/apps/{app_id}/transactions", signer.sign("kv", "put", {"key": f"k{i}", "value": i}), format="json"
        )
        assert reply.status_code == 200 and reply.json()["status"] == "committed", reply.content
        sent += int(reply.wsgi_request.META["CONTENT_LENGTH"])

    def flushed():
        row = UsageHour.objects.filter(app_id=app_id).order_by("-hour").first()
        return row if row is not None and row.tx_committed == 3 else None

    row = wait_for(flushed, timeout=30, interval=0.5, message="beat's flush of the gateway counters")
    assert row.bytes_in == sent and row.region_id == region.pk

    node = LedgerNode.objects.get(app_id=app_id)
    direct = node_storage(node)
    assert direct > 0
    meter = wait_for(
        lambda: NodeMeter.objects.filter(node=node, storage_bytes=direct).first(),
        timeout=30,
        interval=0.5,
        message="beat's scrape of the node's bsn_storage_bytes",
    )
    assert meter.running and meter.last_error == ""
    wait_for(
        lambda: sum(UsageHour.objects.filter(app_id=app_id).values_list("node_seconds", flat=True)) >= 2,
        timeout=30,
        interval=0.5,
        message="node seconds from consecutive scrapes",
    )
    detail = api.get(f"/api/v1/apps/{app_id}").json()
    assert detail["storage_in_use_bytes"] == direct
    usage = api.get(f"/api/v1/apps/{app_id}/usage").json()
    assert usage["totals"]["tx_committed"] == 3 and usage["totals"]["storage_bytes"] == direct
    assert usage["totals"]["node_seconds"] >= 2
    assert node_get(node, "/chain").body["height"] >= 3  # the node committed what the gateway counted
    resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    assert operation_done(api, resp["Location"])["status"] == "succeeded"

"""Metering end to end: a real ledger node (process driver), a real Celery worker with beat.

The gateway counts the transactions in Redis; beat's flush moves them into UsageHour; beat's
scrape reads the node's own ``bsn_storage_bytes`` from its ``/metrics`` and counts the
seconds it ran — all visible through the usage API and the app's detail. And gunicorn with
three worker processes counting into the same Redis hours: the flush adds up exactly what
the clients sent and received.
"""

from __future__ import annotations

import json
import os
import threading

import pytest
import requests
from django.db.models import Sum
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.models import ChainApp, Framework, LedgerNode
from apps.metering import counters, services
from apps.metering.models import NodeMeter, UsageHour
from apps.tenants.services import token_issue
from bsn.client import Client, generate_key
from tests.api.conftest import finish_open_operations, make_app
from tests.conftest import _client_for
from tests.dcep.test_bank_concurrency import Gunicorn
from tests.factories import MembershipFactory, RegionFactory, TenantFactory
from tests.gateway.conftest import attach_sim
from tests.integration.conftest import _database_url, node_get, operation_done, wait_for

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


def test_three_web_processes_count_into_shared_hours_and_the_flush_adds_up_exactly(transactional_db, tmp_path):
    """gunicorn with three workers, four client threads: what the clients sent and received
    equals what lands in UsageHour (the node is a SimLedger in this process)."""
    ensure_builtin_framework(Framework)
    owner = MembershipFactory(tenant=TenantFactory(max_tps=10_000), role="owner")
    region = RegionFactory(code=f"gm-{os.getpid()}", name="gunicorn metering", driver="process")
    app = make_app(owner, "busy", regions=(region.code,), tps_quota=10_000)
    finish_open_operations(app.pk)
    ChainApp.objects.filter(pk=app.pk).update(status=ChainApp.Status.RUNNING)
    sim = attach_sim(ChainApp.objects.get(pk=app.pk).nodes.get())
    token = token_issue(membership=owner, name="load").secret
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bsn.settings_test", "DATABASE_URL": _database_url()}
    server = Gunicorn(tmp_path / "gunicorn.log", env, workers=3, threads=2).start()
    try:
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        base = f"{server.url}/api/v1/apps/{app.pk}"
        private, public = generate_key()
        body = json.dumps({"name": "alice", "public_key": public}).encode()
        assert requests.post(f"{base}/users", data=body, headers=headers, timeout=30).status_code == 201
        signer = Client("http://unused", "-", str(app.pk), "alice", private)
        seen = {"in": 0, "out": 0, "committed": 0, "rejected": 0}
        lock = threading.Lock()

        def client(n: int) -> None:
            mine = {"in": 0, "out": 0, "committed": 0, "rejected": 0}
            with requests.Session() as session:
                for i in range(12):
                    envelope = signer.sign("kv", "put", {"key": f"t{n}-{i}", "value": i})
                    if i == 5:  # one forged signature each: refused by the node
                        envelope["sig"] = signer.sign("kv", "put", {"key": "x", "value": 0})["sig"]
                    data = json.dumps(envelope).encode()
                    resp = session.post(f"{base}/transactions", data=data, headers=headers, timeout=30)
                    mine["in"] += len(data)
                    mine["out"] += len(resp.content)
                    mine["committed" if resp.status_code == 200 else "rejected"] += 1
                read = session.get(f"{base}/chain", headers=headers, timeout=30)
                assert read.status_code == 200
                mine["out"] += len(read.content)
            with lock:
                for key, value in mine.items():
                    seen[key] += value

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        server.stop()
        sim.close()
    assert (seen["committed"], seen["rejected"]) == (44, 4)
    services.counters_flush()
    assert counters.store().pending() == 0
    totals = UsageHour.objects.filter(app=app).aggregate(
        c=Sum("tx_committed"), r=Sum("tx_rejected"), i=Sum("bytes_in"), o=Sum("bytes_out")
    )
    assert (totals["c"], totals["r"], totals["i"], totals["o"]) == (44, 4, seen["in"], seen["out"])
    assert UsageHour.objects.filter(app=app).values("region").distinct().count() == 1
    # and the tenant's volume of the day counted every submission
    assert counters.store().volume_used(str(owner.tenant_id), timezone.now()) == seen["in"]

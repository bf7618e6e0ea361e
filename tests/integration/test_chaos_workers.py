"""Chaos (issue 9): SIGKILL the region's Celery worker at a random point while several apps
provision, start a fresh one (with beat, which resumes stale operations); every round ends
with every operation finished (succeeded, or failed with a reason), zero duplicate
containers and zero orphans after one reconcile pass.

`make test` runs CHAOS_ROUNDS=2; `make chaos` runs 20 (figures: docs/testing.md)."""

from __future__ import annotations

import os
import random
import time

import pytest

from apps.chainapps.models import LedgerNode, Operation
from apps.chainapps.reconcile import reconcile_region
from apps.runtime.spec import LABEL_APP
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import operation_done, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "2"))
APPS_PER_ROUND = 3


@pytest.fixture
def api(transactional_db):
    return _client_for(MembershipFactory(tenant=TenantFactory(max_apps=1000), role="developer"))


def test_worker_sigkills_while_apps_provision_lose_and_duplicate_nothing(
    api, make_regions, worker_factory, docker_engine, ledger_image
):
    (region,) = make_regions("docker")
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "8")))
    tally = {"rounds": 0, "kills": 0, "operations": 0, "succeeded": 0, "failed": 0, "duplicates": 0, "orphans": 0}
    worker = worker_factory([region], stale_seconds=5, beat=True)
    for round_no in range(ROUNDS):
        urls, apps = [], []
        for i in range(APPS_PER_ROUND):
            resp = api.post("/api/v1/apps", {"name": f"chaos-{round_no}-{i}", "regions": [region.code]}, format="json")
            assert resp.status_code == 202, resp.content
            urls.append(resp["Location"])
            apps.append(resp.json()["app"])
        time.sleep(rng.uniform(0.0, 2.5))  # anywhere: before a claim, mid-step, after
        worker.kill()
        tally["kills"] += 1
        worker = worker_factory([region], stale_seconds=5, beat=True)
        for url in urls:
            op = operation_done(api, url, timeout=180)
            tally["operations"] += 1
            if op["status"] == "succeeded":
                tally["succeeded"] += 1
            else:
                assert op["status"] == "failed" and op["last_error"], op  # a reason, never silence
                tally["failed"] += 1
        for app_id in apps:
            nodes = LedgerNode.objects.filter(app_id=app_id).count()
            containers = docker_engine.containers.list(all=True, filters={"label": f"{LABEL_APP}={app_id}"})
            tally["duplicates"] += max(0, len(containers) - nodes)
        report = reconcile_region(region.code, repair=False)
        tally["orphans"] += report["orphans"]
        for app_id in apps:  # leave the engine as the round found it
            resp = api.delete(f"/api/v1/apps/{app_id}?keep_data=false")
            assert operation_done(api, resp["Location"], timeout=120)["status"] == "succeeded"
        tally["rounds"] += 1
    wait_for(lambda: not Operation.objects.open().exists(), timeout=30, message="no open operation")
    print(f"chaos: {tally}")
    assert tally["rounds"] == ROUNDS and tally["operations"] == ROUNDS * APPS_PER_ROUND
    assert tally["duplicates"] == 0 and tally["orphans"] == 0, tally

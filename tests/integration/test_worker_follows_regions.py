"""A worker that serves every region consumes the queue of a region added while it runs.

Reproduces the report: `bsn_region add` on a running platform printed "workers consume queue
region.<code>", but no running worker did, and an app placed there stayed pending. Both
brokers: Redis (production) and the embedded file-system broker (`make run`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
from django.test import override_settings

from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import ROOT, _database_url, operation_done, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api_developer(transactional_db):
    return _client_for(MembershipFactory(tenant=TenantFactory(), role="developer"))


def _send(env: dict, code: str) -> str:
    """Send reconcile_region(code) to the region's queue from another process (the API's side)."""
    task_id = uuid.uuid4().hex
    script = (
        "import django; django.setup()\n"
        "from apps.chainapps.tasks import reconcile_region\n"
        f"reconcile_region.apply_async(({code!r},), queue='region.{code}', task_id={task_id!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=60)
    return task_id


@pytest.mark.parametrize("broker", ["redis", "filesystem"])
def test_a_region_added_while_the_worker_runs_is_served(broker, redis_url, make_regions, worker_factory, tmp_path):
    env = {"BSN_WORKER_FOLLOW_REGIONS": "1", "BSN_WORKER_FOLLOW_INTERVAL": "0.5"}
    if broker == "filesystem":
        env |= {"CELERY_BROKER_URL": "filesystem://", "BSN_DATA_DIR": str(tmp_path / "data")}
    worker = worker_factory([], env=env)  # the default queue only: no region exists for it yet

    (region,) = make_regions("process")  # committed: the worker's thread sees it
    wait_for(
        lambda: f"now consuming {region.queue}" in worker.log_path.read_text(),
        timeout=30,
        message=f"the worker to consume {region.queue}",
    )
    send_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bsn.settings_test",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": redis_url,
        **{k: v for k, v in env.items() if not k.startswith("BSN_WORKER")},
    }
    task_id = _send(send_env, region.code)
    wait_for(
        lambda: f"reconcile_region[{task_id}] succeeded" in worker.log_path.read_text(),
        timeout=60,
        message="the task on the new region's queue to run",
    )


def test_a_worker_for_chosen_regions_does_not_follow(make_regions, worker_factory):
    """`bsn_worker <codes>` serves those regions only: the following is for workers of every region."""
    (first,) = make_regions("process")
    worker = worker_factory([first], env={"BSN_WORKER_FOLLOW_INTERVAL": "0.2"})
    (second,) = make_regions("process")
    time.sleep(1.5)  # several follow intervals: nothing may happen
    assert f"now consuming {second.queue}" not in worker.log_path.read_text()


@pytest.mark.integration
def test_an_operation_no_worker_takes_says_which_queue_it_waits_on(api_developer, make_regions, worker_factory):
    """The report: an app placed on a region no running worker serves stayed pending with nothing
    saying why. Now its operation's step and log name the queue it waits on, and once a worker
    for that region starts, it goes on."""
    from apps.chainapps import provisioning

    (region,) = make_regions("process")
    worker_factory([])  # the default queue only: operation_begin runs, the node step waits
    resp = api_developer.post("/api/v1/apps", {"name": "waits", "regions": [region.code]}, format="json")
    assert resp.status_code == 202, resp.content
    op_url = resp["Location"]

    def dispatched():
        steps = api_developer.get(op_url).json()["steps"]
        return steps and all(step.get("dispatched_at") for step in steps.values())

    wait_for(dispatched, timeout=30, message="the node step to be sent to the region's queue")
    with override_settings(BSN_STEP_PICKUP_SECONDS=0.5):
        time.sleep(0.6)
        assert provisioning.operations_waiting() == 1
        assert provisioning.operations_waiting() == 0  # said once
    body = api_developer.get(op_url).json()
    (step,) = body["steps"].values()
    assert (
        step["state"] == "pending" and step["waiting"] == f"no worker has taken this step from queue {region.queue} yet"
    )
    assert any(
        f"waiting for a worker on queue {region.queue}" in line["message"]
        and f"bsn_worker {region.code}" in line["message"]
        for line in body["log"]
    ), body["log"]

    worker_factory([region])  # a worker for the region: the step is taken and the app comes up
    done = operation_done(api_developer, op_url, timeout=120)
    assert done["status"] == "succeeded", done
    assert any("a worker took the step of node" in line["message"] for line in done["log"]), done["log"]

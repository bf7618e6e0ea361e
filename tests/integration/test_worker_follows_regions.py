"""A worker that serves every region consumes the queue of a region added while it runs.

Reproduces the report: `bsn_region add` on a running platform printed "workers consume queue
region.<code>", but no running worker did, and an app placed there stayed pending. Both
brokers: Redis (production) and the embedded file-system broker (`make run`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tests.integration.conftest import ROOT, _database_url, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


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
    import time

    time.sleep(1.5)  # several follow intervals: nothing may happen
    assert f"now consuming {second.queue}" not in worker.log_path.read_text()

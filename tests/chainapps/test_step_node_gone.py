"""A step whose node row was deleted under it (an operator's cleanup, a scale that removed
it) ends done in one write, with nothing of its dispatch left on it."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from apps.chainapps import provisioning
from apps.chainapps.models import ChainApp, Framework, Operation
from tests.factories import TenantFactory


@pytest.mark.django_db
def test_a_step_whose_node_row_is_gone_is_done_and_ends_the_operation():
    framework, _ = Framework.objects.get_or_create(
        slug="gone-test", defaults={"name": "t", "version": "1", "image": "bsn/ledger:latest"}
    )
    app = ChainApp.objects.create(tenant=TenantFactory(), name="gone", framework=framework)
    node_id = str(uuid.uuid4())
    dispatched = {
        "queue": "region.cn-gone",
        "dispatched_at": timezone.now().isoformat(),
        "waiting": "no worker has taken it from queue region.cn-gone yet",
    }
    op = Operation.objects.create(
        tenant=app.tenant,
        app=app,
        kind=Operation.Kind.PROVISION,
        status=Operation.Status.RUNNING,
        heartbeat_at=timezone.now(),
        steps={node_id: {"state": provisioning.STEP_PENDING, "error": "", **dispatched}},
    )
    assert provisioning.node_step_run(str(op.pk), node_id) == provisioning.STEP_DONE
    op.refresh_from_db()
    assert op.status == Operation.Status.SUCCEEDED
    assert op.steps[node_id] == {"state": provisioning.STEP_DONE, "error": ""}
    assert any(line["message"] == "node row gone" for line in op.log)
    assert provisioning.node_step_run(str(op.pk), node_id) == "skipped"  # a redelivery changes nothing

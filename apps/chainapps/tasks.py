"""Celery tasks: thin wrappers that pass ids only and call provisioning/reconcile code."""

from __future__ import annotations

import logging
import random

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from kombu.exceptions import OperationalError

from apps.chainapps import provisioning, reconcile
from apps.common.incidents import incident, runtime_reason
from apps.regions.models import Region
from apps.runtime.base import is_transient

logger = logging.getLogger(__name__)

STEP_MAX_RETRIES = 6
BUSY_MAX_WAITS = 30
REFRESH_DEDUPE_SECONDS = 10


def backoff(retries: int, *, base: float = 1.0, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(cap, base * 2**retries)) + 0.2  # noqa: S311 - jitter, not crypto


def enqueue_operation(operation_id: str) -> None:
    operation_begin.apply_async((operation_id,), queue=settings.CELERY_TASK_DEFAULT_QUEUE)


@shared_task(acks_late=True)
def operation_begin(operation_id: str, waits: int = 0) -> str:
    op, why = provisioning.operation_claim(operation_id)
    if op is None:
        if why == "busy" and waits < BUSY_MAX_WAITS:
            # Another operation of this app is running; look again shortly. Past the
            # bound, resume_stale_operations picks it up.
            operation_begin.apply_async(
                (operation_id, waits + 1), countdown=2, queue=settings.CELERY_TASK_DEFAULT_QUEUE
            )
        return why
    nodes = provisioning.pending_steps(op)
    if not nodes:
        provisioning.complete_if_done(operation_id)
        return "nothing to do"
    _send_steps(operation_id, nodes)
    provisioning.operation_prepare(op)  # while the steps are on their way
    return f"dispatched {len(nodes)}"


def _send_steps(operation_id: str, nodes) -> None:
    provisioning.steps_dispatched(operation_id, {str(node.pk): node.region.queue for node in nodes})
    for node in nodes:
        node_step.apply_async((operation_id, str(node.pk)), queue=node.region.queue)


def dispatch_steps(operation_id: str, node_ids: list[str]) -> None:
    """Send steps that became ready (the next order of an upgrade or scale) to their
    regions' queues. Called after the commit that finished the previous order; if the
    broker is away, the operation goes stale and resume_stale_operations sends them."""
    from apps.chainapps.models import LedgerNode

    nodes = list(LedgerNode.objects.select_related("region").filter(pk__in=node_ids))
    try:
        _send_steps(operation_id, nodes)
    except OperationalError as exc:
        logger.warning("could not send the next steps of operation %s: %s", operation_id, exc)


@shared_task(bind=True, acks_late=True, max_retries=STEP_MAX_RETRIES)
def node_step(self, operation_id: str, node_id: str) -> str:
    try:
        return provisioning.node_step_run(operation_id, node_id)
    except Exception as exc:
        if is_transient(exc):  # whichever adapter raised it: try again with backoff
            if self.request.retries >= STEP_MAX_RETRIES:
                seen = incident(f"gave up after retries: {runtime_reason(exc)}", exc)
                return provisioning.step_give_up(operation_id, node_id, seen.message, detail=seen.detail)
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
        # A bug must not leave the operation hanging: the step fails visibly (the tenant sees
        # a reference, staff the exception).
        logger.exception("node step %s/%s crashed", operation_id, node_id)
        seen = incident("an internal error stopped this step", f"{exc.__class__.__name__}: {exc}")
        return provisioning.step_give_up(operation_id, node_id, seen.message, detail=seen.detail)


@shared_task(acks_late=True)
def resume_stale_operations() -> int:
    """Operations whose worker died (stale heartbeat) or that nobody claimed get enqueued again."""
    ids = provisioning.stale_operations()
    for operation_id in ids:
        logger.warning("resuming stale operation %s", operation_id)
        enqueue_operation(operation_id)
    return len(ids)


@shared_task
def operations_waiting() -> int:
    """Say in their log which steps no worker has taken from their region's queue."""
    return provisioning.operations_waiting()


@shared_task
def reconcile_all() -> int:
    return len(region_reconcile_now(Region.objects.only("code")))


@shared_task
def reconcile_region(region_code: str) -> dict:
    return reconcile.reconcile_region(region_code, wait=0)  # another pass running: skip, the next tick comes


def node_refresh_later(node, *, facts: bool = False) -> None:
    """Ask the node's region worker to look at the node again: its state, and its chain
    (height, head, proposer) when it answers. Two reasons, each deduplicated per node on
    its own, so that a refresh for fresh facts never swallows one for trouble: trouble
    (the gateway found the node silent or not proving its identity; at most once per
    REFRESH_DEDUPE_SECONDS) and ``facts`` (what an API reader sees is older than
    BSN_NODE_FACTS_MAX_AGE; at most once per that). The web process itself never calls
    the engine or the node for it."""
    if facts:
        key, dedupe = f"bsn:node-facts:{node.pk}", settings.BSN_NODE_FACTS_MAX_AGE
    else:
        key, dedupe = f"bsn:node-refresh:{node.pk}", REFRESH_DEDUPE_SECONDS
    if not cache.add(key, 1, timeout=max(1, int(dedupe))):
        return
    try:
        node_refresh.apply_async((str(node.pk),), queue=node.region.queue, expires=60)
    except OperationalError as exc:  # the broker is down: the reconciler's next pass does it
        logger.warning("could not enqueue a refresh of node %s: %s", node.pk, exc)


@shared_task
def warm_fill_task(region_code: str) -> dict:
    """Make the region's missing warm nodes (docs/provisioning.md, "Warm nodes"); one at a
    time per region (a second call while one runs returns at once)."""
    from apps.chainapps.warm import warm_fill
    from apps.common.leases import single_flight

    region = Region.objects.filter(code=region_code).first()
    if region is None:
        return {"region": region_code, "error": "unknown region"}
    with single_flight(Region, region.pk, "warm_fill_lease_until", 120, wait=0) as mine:
        if not mine:
            return {"region": region_code, "skipped": "another fill of this region is running"}
        return warm_fill(region_code)


@shared_task
def node_refresh(node_id: str) -> str:
    return reconcile.reconcile_node(node_id)


@shared_task(acks_late=True)
def node_restart(node_id: str) -> str:
    return reconcile.node_restart(node_id)


def region_reconcile_now(regions) -> list[str]:
    """Send a reconcile pass to each region's queue now (beat's periodic pass and the
    admin's "reconcile now"); the queues it went to."""
    queues = []
    for region in regions:
        reconcile_region.apply_async((region.code,), queue=region.queue, expires=settings.BSN_RECONCILE_INTERVAL * 2)
        queues.append(region.queue)
    return queues

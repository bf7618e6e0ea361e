"""Celery tasks for the ordering service (default queue): thin wrappers over services."""

from __future__ import annotations

from celery import shared_task

from apps.chainapps.tasks import backoff
from apps.ordering import services
from apps.runtime.base import TransientRuntimeError

ENSURE_MAX_RETRIES = 6


@shared_task(bind=True, acks_late=True, max_retries=ENSURE_MAX_RETRIES)
def ordering_ensure(self) -> str:
    """Idempotent, so acks_late and retries of transient errors are safe."""
    try:
        cluster = services.ordering_ensure()
    except TransientRuntimeError as exc:
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
    return cluster.state


@shared_task
def ordering_heal() -> dict:
    """Beat: restart dead members, re-attach networks, record health (no-op before ensure);
    then make up the spare etcd users (a take's own request may have found the lease held)."""
    report = services.ordering_heal(wait=0)  # another heal running: skip, the next tick comes
    report["spares"] = services.ordering_spares_fill()
    return report


@shared_task
def ordering_spares_fill_task() -> dict:
    """After a create took a spare etcd user: make up the pool (services.ordering_spares_fill)."""
    return services.ordering_spares_fill()

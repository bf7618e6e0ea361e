"""DCEP background work: settlement batches, hold expiry, unfinished tier-1 operations, key purge."""

from __future__ import annotations

import logging

from celery import shared_task

from apps.dcep.errors import Tier1Unavailable

logger = logging.getLogger(__name__)


def enqueue_settlement(settlement_id: str) -> None:
    settlement_execute.delay(settlement_id)


@shared_task(
    acks_late=True,
    autoretry_for=(Tier1Unavailable,),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=20,
)
def settlement_execute(settlement_id: str) -> None:
    """Idempotent: claims once, anchors once (the chain applies a batch id once)."""
    from apps.dcep.settlement import settlement_run

    settlement_run(settlement_id)


@shared_task
def settlement_scheduled() -> None:
    """Beat: start a batch when there are unsettled obligations (and none is open)."""
    from apps.dcep.settlement import settlement_start

    try:
        batch, created = settlement_start(skip_if_empty=True)
    except Tier1Unavailable as exc:
        logger.info("scheduled settlement skipped: %s", exc.detail)
        return
    if batch is not None and not created:
        settlement_execute.delay(str(batch.pk))  # an open batch left by a crash: drive it on


@shared_task
def holds_expire() -> int:
    from apps.dcep.services import holds_expire as expire

    return expire()


@shared_task
def tier1_resolve() -> int:
    from apps.dcep.tier1 import tier1_resolve as resolve

    try:
        return resolve()
    except Tier1Unavailable:
        return 0


@shared_task
def idempotency_purge() -> int:
    from apps.dcep.idempotency import idempotency_purge as purge

    return purge()

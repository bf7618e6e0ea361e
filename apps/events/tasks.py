"""Beat and worker tasks of the event reader: ids only through the broker."""

from __future__ import annotations

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)  # idempotent: a second run finds the cursors moved, or the app locked
def events_pump_app(app_id: str) -> int:
    from apps.events.services import pump_app

    return pump_app(app_id)


@shared_task
def events_pump_all() -> int:
    """Beat: one pump task per app that some consumer is interested in."""
    from apps.events.services import interested_app_ids

    wanted = interested_app_ids()
    for app_id in wanted:
        events_pump_app.delay(str(app_id))
    return len(wanted)

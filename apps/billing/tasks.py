"""Billing beat tasks: month close, payment attempts, suspensions. Each is idempotent and takes an
optional ``now`` (ISO 8601) so that tests run a month in a moment; beat passes none (the clock)."""

from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.utils import timezone


def _now(now: str | None) -> dt.datetime:
    if not now:
        return timezone.now()
    value = dt.datetime.fromisoformat(now)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)  # times are UTC


@shared_task(acks_late=True)
def month_close(now: str | None = None) -> dict | None:
    """Invoice the previous month once it is over (BSN_BILLING_CLOSE_AFTER_HOURS into the new one)."""
    from apps.billing.services import month_close_due

    return month_close_due(now=_now(now))


@shared_task(acks_late=True)
def payments_due(now: str | None = None) -> dict:
    """Pay every due invoice whose next attempt has come (retried every BSN_BILLING_RETRY_HOURS)."""
    from apps.billing.services import payments_due as pay

    return pay(now=_now(now))


@shared_task(acks_late=True)
def invoice_pay(invoice_id: str, now: str | None = None, force: bool = False) -> str:
    """Attempt one invoice now (ids only through the broker); paying twice at once pays once."""
    from apps.billing.services import invoice_pay as pay

    return pay(invoice_id=invoice_id, now=_now(now), force=force).status


@shared_task(acks_late=True)
def suspensions_enforce(now: str | None = None) -> dict:
    """Suspend tenants overdue past the grace period, keep their apps stopped, lift paid ones."""
    from apps.billing.services import suspensions_enforce as enforce

    return enforce(now=_now(now))

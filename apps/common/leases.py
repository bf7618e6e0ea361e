"""Single-flight leases on a row: one holder at a time across every process and worker.

A lease is a nullable timestamp column: taking it is one conditional UPDATE (free, or held
past its end), giving it back clears it only if it is still ours. It works on SQLite and
PostgreSQL alike and needs no cache or Redis (the embedded stack has neither); a holder
that dies leaves a lease that ends by itself after ``seconds``. Written here rather than
taken from a library: Django's cache locks need a shared cache the embedded default does
not have, and PostgreSQL advisory locks do not exist on SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone


def _take(model: type[models.Model], pk, field: str, seconds: float):
    now = timezone.now()
    until = now + timedelta(seconds=seconds)
    free = Q(**{f"{field}__isnull": True}) | Q(**{f"{field}__lt": now})
    return until if model.objects.filter(Q(pk=pk) & free).update(**{field: until}) == 1 else None


@contextmanager
def single_flight(
    model: type[models.Model], pk, field: str, seconds: float, *, wait: float = 0.0, poll: float = 0.2
) -> Iterator[bool]:
    """``with single_flight(Region, region.pk, "reconcile_lease_until", 60) as mine:`` —
    ``mine`` is False when another holder's lease still runs after ``wait`` seconds of
    asking again every ``poll`` seconds; the lease is given back on exit."""
    deadline = time.monotonic() + wait
    until = _take(model, pk, field, seconds)
    while until is None and time.monotonic() < deadline:
        time.sleep(poll)
        until = _take(model, pk, field, seconds)
    try:
        yield until is not None
    finally:
        if until is not None:  # only ours: past its end another holder may have taken it
            model.objects.filter(pk=pk, **{field: until}).update(**{field: None})

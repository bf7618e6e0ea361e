"""Shared model pieces."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.db import models


class Installation(models.Model):
    """The one row that names this control-plane database on shared engines."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return str(self.id)


# The id read within an ``installation_scope()`` (None outside one, or not read yet).
_scoped_installation: ContextVar[list[str] | None] = ContextVar("installation_scope", default=None)


@contextmanager
def installation_scope() -> Iterator[None]:
    """Within it, ``installation_id()`` reads the row once: for a unit of work that asks
    for it several times (a node step asks three times: its spec, its configured spec,
    its network's labels). Not across units of work: see ``installation_id``."""
    token = _scoped_installation.set([])
    try:
        yield
    finally:
        _scoped_installation.reset(token)


def installation_id() -> str:
    """Generated once per database (by a migration); labels every runtime object we own.

    Read from the database each time (one indexed row) rather than cached per process, so
    every web and worker process always agrees, even after a test flushes the tables;
    once per ``installation_scope()``.
    """
    scoped = _scoped_installation.get()
    if scoped:
        return scoped[0]
    found = _read_installation_id()
    if scoped is not None:
        scoped.append(found)
    return found


def _read_installation_id() -> str:
    row = Installation.objects.order_by("created_at", "id").first()
    if row is None:  # tables flushed (tests) or created without migration data
        Installation.objects.create()
        row = Installation.objects.order_by("created_at", "id").first()
    return str(row.pk)


class TimeStamped(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

"""Shared model pieces."""

import uuid

from django.db import models

from apps.common.scope import scoped


class Installation(models.Model):
    """The one row that names this control-plane database on shared engines."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return str(self.id)


def installation_id() -> str:
    """Generated once per database (by a migration); labels every runtime object we own.

    Read from the database each time (one indexed row) rather than cached per process, so
    every web and worker process always agrees, even after a test flushes the tables;
    once per ``work_scope()`` (apps/common/scope.py).
    """
    return scoped("installation_id", _read_installation_id)


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

"""Shared model pieces."""

import uuid

from django.db import models


class Installation(models.Model):
    """The one row that names this control-plane database on shared engines."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)


_cached: dict[str, str] = {}


def installation_id() -> str:
    """Generated once per database (by a migration); labels every runtime object we own."""
    from django.db import connection

    key = connection.settings_dict["NAME"]
    if key not in _cached:
        row = Installation.objects.order_by("created_at").first()
        if row is None:  # database created without migrations' data (should not happen)
            row = Installation.objects.create()
        _cached[key] = str(row.pk)
    return _cached[key]


class TimeStamped(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

"""App users: the participant identities of a chain app, registered on its ledger."""

from __future__ import annotations

import re
import uuid

from django.conf import settings
from django.db import models

from apps.chainapps.models import ChainApp
from apps.common.models import TimeStamped

# docs/ledger-protocol.md, "_config": the names a node accepts as signers.
USER_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
RESERVED_NAMES = frozenset({"_admin"})


class AppUserQuerySet(models.QuerySet):
    def for_app(self, app: ChainApp) -> AppUserQuerySet:
        return self.filter(app=app)


class AppUser(TimeStamped):
    """A participant of one chain app, with the Ed25519 public key it signs with.

    Two key modes: ``upload`` (the tenant registered its public key; the private key never
    leaves the tenant) and ``custody`` (the platform generated the key and keeps the
    private part encrypted in ``apps.custody``; ``exported_at`` once it was handed out,
    which happens at most once). The row follows the
    ledger: ``pending`` until the node confirmed the `_config` ``user.add`` transaction,
    ``revoking`` until it confirmed ``user.revoke``. ``pending_tx`` keeps the signed
    envelope in flight so that a retry re-sends exactly the same transaction (same
    ``tx_id``, same nonce: it can never apply twice).
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        ACTIVE = "active"
        REVOKING = "revoking"
        REVOKED = "revoked"

    class Mode(models.TextChoices):
        UPLOAD = "upload"
        CUSTODY = "custody"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    app = models.ForeignKey(ChainApp, on_delete=models.CASCADE, related_name="users")
    name = models.CharField(max_length=64)
    public_key = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.UPLOAD)
    exported_at = models.DateTimeField(null=True, blank=True, help_text="custody: when its private key was exported")
    pending_tx = models.JSONField(null=True, blank=True, help_text="signed _config envelope awaiting confirmation")
    last_error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    activated_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = AppUserQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "name"]
        constraints = [
            # A name is used once per app, revoked or not: chain history stays unambiguous.
            models.UniqueConstraint(fields=["app", "name"], name="appuser_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.app_id}/{self.name}"

    def nonce(self, action: str) -> str:
        """The `_config` transaction nonce for ``action`` (add | revoke): one per user and action."""
        return f"{self.pk.hex}-{action}"

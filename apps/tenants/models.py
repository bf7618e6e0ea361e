"""Tenants, their members with roles, and hashed API tokens."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.common.models import TimeStamped


class TenantQuerySet(models.QuerySet):
    def active(self) -> TenantQuerySet:
        return self.filter(is_active=True)


class Tenant(TimeStamped):
    """An organisation using the platform."""

    class Kind(models.TextChoices):
        ENTERPRISE = "enterprise"
        OPERATOR_BANK = "operator_bank"
        CENTRAL_BANK = "central_bank"
        PLATFORM = "platform"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.ENTERPRISE)
    is_active = models.BooleanField(default=True)
    max_apps = models.PositiveIntegerField(default=10)
    max_nodes = models.PositiveIntegerField(default=30)
    max_tps = models.PositiveIntegerField(default=100)
    max_storage_mb = models.PositiveIntegerField(default=10_240)
    max_daily_volume_mb = models.PositiveIntegerField(
        default=1024, help_text="request bytes the gateway accepts per UTC day, all apps together (MiB)"
    )

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Role(models.TextChoices):
    VIEWER = "viewer"
    DEVELOPER = "developer"
    ADMIN = "admin"
    OWNER = "owner"


ROLE_RANK = {Role.VIEWER: 0, Role.DEVELOPER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class MembershipQuerySet(models.QuerySet):
    def usable_by(self, user) -> MembershipQuerySet:
        """The memberships ``user`` may act through: those of active tenants (the rule the
        API's log-in and browser sessions, and the portal, all apply)."""
        return self.filter(user=user, tenant__is_active=True).select_related("tenant")


class Membership(TimeStamped):
    """A user's role in one tenant."""

    objects = MembershipQuerySet.as_manager()

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user")]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"

    def has_role(self, minimum: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(minimum)]


def token_digest(secret: str) -> str:
    # Secrets are 32 random bytes, so a fast hash is safe (no dictionary to attack).
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def usable(self) -> ApiTokenQuerySet:
        now = timezone.now()
        # BSN_TOKEN_MAX_TTL_DAYS also ends tokens issued before it was lowered.
        oldest = now - timedelta(days=settings.BSN_TOKEN_MAX_TTL_DAYS)
        return self.filter(
            revoked_at__isnull=True, expires_at__gt=now, created_at__gt=oldest, membership__tenant__is_active=True
        )


class ApiToken(TimeStamped):
    """A bearer token of one membership; only its SHA-256 digest is stored."""

    PREFIX_LENGTH = 8

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    membership = models.ForeignKey(Membership, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=PREFIX_LENGTH, db_index=True)
    digest = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_usable(self) -> bool:
        now = timezone.now()
        oldest = now - timedelta(days=settings.BSN_TOKEN_MAX_TTL_DAYS)
        return self.revoked_at is None and self.expires_at > now and self.created_at > oldest

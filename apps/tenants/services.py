"""Writes for tenants, members and tokens."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.validators import ASCIIUsernameValidator
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import PermissionDenied, ValidationError

from apps.audit.services import audit_record
from apps.common.errors import Conflict, DomainError
from apps.tenants.models import ApiToken, Membership, Role, Tenant, token_digest

User = get_user_model()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once, never stored


def tenant_create(*, slug: str, name: str, kind: str = Tenant.Kind.ENTERPRISE, actor=None, **quotas) -> Tenant:
    if Tenant.objects.filter(slug=slug).exists():
        raise Conflict(f"A tenant with slug '{slug}' already exists.")
    with transaction.atomic():
        tenant = Tenant.objects.create(slug=slug, name=name, kind=kind, **quotas)
        audit_record(
            action="tenant.create",
            object_type="tenant",
            object_id=tenant.pk,
            tenant=tenant,
            actor=actor,
            data={"slug": slug, "kind": kind},
        )
    return tenant


def tenant_set_quota(*, tenant: Tenant, actor=None, request=None, **quotas) -> Tenant:
    """Platform staff set a tenant's quotas (command, admin, API); audited with the values before."""
    allowed = {"max_apps", "max_nodes", "max_tps", "max_storage_mb", "max_daily_volume_mb"}
    unknown = set(quotas) - allowed
    if unknown:
        raise ValidationError({"quota": f"unknown quota(s): {', '.join(sorted(unknown))}"})
    with transaction.atomic():
        before = dict(Tenant.objects.filter(pk=tenant.pk).values(*quotas).first() or {})
        for key, value in quotas.items():
            if value is None or int(value) < 0:
                raise ValidationError({key: "must be a non-negative integer"})
            setattr(tenant, key, int(value))
        tenant.save(update_fields=[*quotas, "updated_at"])
        audit_record(
            action="tenant.quota",
            object_type="tenant",
            object_id=tenant.pk,
            tenant=tenant,
            actor=actor,
            data={**quotas, "before": before},
            request=request,
        )
    return tenant


def tenant_set_active(*, tenant: Tenant, active: bool, actor=None, request=None) -> Tenant:
    """Platform staff activate or deactivate a tenant (``bsn_tenant activate|deactivate``,
    the console). A deactivated tenant's tokens and logins are refused; its apps keep
    running (stopping them is a separate, visible decision). Audited when it changes."""
    with transaction.atomic():
        if Tenant.objects.filter(pk=tenant.pk).exclude(is_active=active).update(is_active=active):
            audit_record(
                action="tenant.activate" if active else "tenant.deactivate",
                object_type="tenant",
                object_id=tenant.pk,
                tenant=tenant,
                actor=actor,
                request=request,
            )
    tenant.refresh_from_db()
    return tenant


def tenant_rename(*, tenant: Tenant, name: str, actor=None, request=None) -> Tenant:
    """Change a tenant's display name (its slug is fixed: it appears in URLs and container labels). Audited."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "must not be blank"})
    with transaction.atomic():
        before = Tenant.objects.filter(pk=tenant.pk).values_list("name", flat=True).get()
        if before != name:
            Tenant.objects.filter(pk=tenant.pk).update(name=name)
            audit_record(
                action="tenant.rename",
                object_type="tenant",
                object_id=tenant.pk,
                tenant=tenant,
                actor=actor,
                data={"name": name, "before": before},
                request=request,
            )
    tenant.refresh_from_db()
    return tenant


def tenant_quota_update(*, tenant: Tenant, actor, quotas: dict, request=None) -> Tenant:
    """``tenant_set_quota`` for the API: platform staff only."""
    if not getattr(actor, "is_staff", False):
        raise DomainError(
            "Quotas are set by platform staff, not by the tenant: ask your platform operator.",
            code="staff-only",
            status=403,
        )
    return tenant_set_quota(tenant=tenant, actor=actor, request=request, **quotas)


def token_issue(
    *, membership: Membership, name: str, ttl_days: int | None = None, actor=None, request=None
) -> IssuedToken:
    ttl = ttl_days if ttl_days is not None else settings.BSN_TOKEN_TTL_DAYS
    longest = settings.BSN_TOKEN_MAX_TTL_DAYS
    if ttl < 1 or ttl > longest:
        raise ValidationError({"expires_in_days": f"must be between 1 and {longest} (BSN_TOKEN_MAX_TTL_DAYS)"})
    secret = "bsn_" + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            membership=membership,
            name=name,
            prefix=secret[4 : 4 + ApiToken.PREFIX_LENGTH],
            digest=token_digest(secret),
            expires_at=timezone.now() + timedelta(days=ttl),
        )
        audit_record(
            action="token.create",
            object_type="token",
            object_id=token.pk,
            tenant=membership.tenant,
            actor=actor or membership.user,
            data={"name": name, "for": membership.user.username},
            request=request,
        )
    return IssuedToken(token=token, secret=secret)


def token_replace(*, membership: Membership, name: str, keep: int = 0, ttl_days: int | None = None, request=None):
    """Issue a token named ``name`` and revoke the membership's older usable tokens of that
    name beyond the newest ``keep`` (0: the new one replaces them all), so repeated log-ins
    or demo runs do not pile up live secrets.
    """
    with transaction.atomic():
        issued = token_issue(membership=membership, name=name, ttl_days=ttl_days, request=request)
        older = (
            ApiToken.objects.usable()
            .filter(membership=membership, name=name)
            .exclude(pk=issued.token.pk)
            .order_by("-created_at")
            .values_list("pk", flat=True)
        )
        stale = list(older[keep:])
        if stale:
            ApiToken.objects.filter(pk__in=stale).update(revoked_at=timezone.now())
            audit_record(
                action="token.revoke",
                object_type="token",
                object_id=issued.token.pk,
                tenant=membership.tenant,
                actor=membership.user,
                data={"replaced": len(stale), "name": name},
                request=request,
            )
    return issued


def token_revoke(*, token: ApiToken, actor=None, request=None) -> ApiToken:
    with transaction.atomic():
        updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if updated:
            audit_record(
                action="token.revoke",
                object_type="token",
                object_id=token.pk,
                tenant=token.membership.tenant,
                actor=actor,
                request=request,
            )
    token.refresh_from_db()
    return token


def login_membership(*, user, tenant_slug: str | None) -> Membership | None:
    """The one active membership a log-in acts for; None when there is none (or not the named one)."""
    memberships = Membership.objects.usable_by(user).select_related("user")
    if tenant_slug:
        memberships = memberships.filter(tenant__slug=tenant_slug)
    found = list(memberships[:2])
    if not found:
        return None
    if len(found) > 1:
        raise ValidationError({"tenant": "You belong to several tenants; name one (its slug)."})
    return found[0]


def login_membership_count(*, user) -> int:
    """How many active tenants ``user`` may act for."""
    return Membership.objects.usable_by(user).count()


def login_issue_token(*, membership: Membership, request=None) -> IssuedToken:
    """A log-in token (BSN_LOGIN_TOKEN_TTL_DAYS); a member keeps at most BSN_LOGIN_TOKENS_MAX."""
    return token_replace(
        membership=membership,
        name="login",
        keep=settings.BSN_LOGIN_TOKENS_MAX - 1,
        ttl_days=settings.BSN_LOGIN_TOKEN_TTL_DAYS,
        request=request,
    )


def _owners(tenant: Tenant) -> int:
    return Membership.objects.filter(tenant=tenant, role=Role.OWNER).count()


def username_validate(username: str) -> str:
    """Usernames are ASCII only (no look-alike ``аdmin`` with a Cyrillic ``а``)."""
    try:
        ASCIIUsernameValidator()(username)
    except DjangoValidationError as exc:
        raise ValidationError({"username": list(exc.messages)}) from exc
    return username


def member_username(*, tenant: Tenant, name: str) -> str:
    """The login name of a member a tenant creates: ``<name>@<tenant slug>``."""
    return f"{name}@{tenant.slug}"


def member_add(
    *,
    tenant: Tenant,
    actor_membership: Membership,
    username: str,
    role: str,
    password: str,
    email: str = "",
    request=None,
) -> Membership:
    """Create a new account ``<username>@<tenant slug>`` and make it a member.

    A tenant admin only ever creates accounts, inside the tenant's own namespace: an
    existing account (another tenant's, the platform superuser, anyone's) is never
    attached, and since every name they can ask for is their own tenant's, the answer
    cannot tell them whether an account exists anywhere else. Operators give existing
    accounts more tenants (admin portal, ``manage.py bsn_tenant``).
    """
    if role == Role.OWNER and actor_membership.role != Role.OWNER:
        raise PermissionDenied("Only an owner can add another owner.")
    login_name = username_validate(member_username(tenant=tenant, name=username))
    candidate = User(username=login_name, email=email)
    try:
        validate_password(password, candidate)
    except DjangoValidationError as exc:
        raise ValidationError({"password": list(exc.messages)}) from exc
    candidate.set_password(password)
    with transaction.atomic():
        existing = User.objects.filter(username=login_name).first()
        if existing is not None:
            if Membership.objects.filter(tenant=tenant, user=existing).exists():
                raise Conflict(f"'{login_name}' is already a member of this tenant.")
            # A former member of this tenant (removing a member keeps the account).
            raise Conflict(f"The username '{login_name}' was used before in this tenant; choose another name.")
        try:
            with transaction.atomic():
                candidate.save()
        except IntegrityError:  # created concurrently under the same name
            raise Conflict(f"'{login_name}' was just created by another request.") from None
        membership = Membership.objects.create(tenant=tenant, user=candidate, role=role)
        audit_record(
            action="member.add",
            object_type="membership",
            object_id=membership.pk,
            tenant=tenant,
            actor=actor_membership.user,
            data={"username": login_name, "role": role},
            request=request,
        )
    return membership


def member_change_role(*, membership: Membership, actor_membership: Membership, role: str, request=None) -> Membership:
    touches_owner = role == Role.OWNER or membership.role == Role.OWNER
    if touches_owner and actor_membership.role != Role.OWNER:
        raise PermissionDenied("Only an owner can grant or take away the owner role.")
    with transaction.atomic():
        locked = Membership.objects.select_for_update().get(pk=membership.pk)
        if locked.role == Role.OWNER and role != Role.OWNER and _owners(locked.tenant) <= 1:
            raise Conflict("A tenant must keep at least one owner.")
        old = locked.role
        locked.role = role
        locked.save(update_fields=["role", "updated_at"])
        audit_record(
            action="member.role",
            object_type="membership",
            object_id=locked.pk,
            tenant=locked.tenant,
            actor=actor_membership.user,
            data={"username": locked.user.username, "from": old, "to": role},
            request=request,
        )
    return locked


def member_remove(*, membership: Membership, actor_membership: Membership, request=None) -> None:
    if membership.role == Role.OWNER and actor_membership.role != Role.OWNER:
        raise PermissionDenied("Only an owner can remove an owner.")
    with transaction.atomic():
        locked = Membership.objects.select_for_update().get(pk=membership.pk)
        if locked.role == Role.OWNER and _owners(locked.tenant) <= 1:
            raise Conflict("A tenant must keep at least one owner.")
        ApiToken.objects.filter(membership=locked, revoked_at__isnull=True).update(revoked_at=timezone.now())
        audit_record(
            action="member.remove",
            object_type="membership",
            object_id=locked.pk,
            tenant=locked.tenant,
            actor=actor_membership.user,
            data={"username": locked.user.username},
            request=request,
        )
        locked.delete()

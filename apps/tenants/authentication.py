"""Bearer tokens: ``Authorization: Token <secret>`` (or ``Bearer``), looked up by SHA-256 digest."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from rest_framework import authentication, exceptions

from apps.tenants.models import ApiToken, Membership, Tenant, token_digest

_LAST_USED_RESOLUTION = timedelta(minutes=1)


def _columns(model, alias: str) -> tuple[list[str], list[str]]:
    fields = [f for f in model._meta.concrete_fields]
    return [f.attname for f in fields], [f"{alias}.{connection.ops.quote_name(f.column)}" for f in fields]


def _token_query():
    """The rows of ``ApiToken.objects.usable().select_related(membership__user, membership__tenant)``
    for one digest, as one plain query: every API request authenticates, and compiling the
    ORM's query cost ten times running it (docs/benchmarks.md). The conditions of ``usable()`` but
    the maximum lifetime, which the caller checks with ``is_usable``."""
    parts = [_columns(m, a) for m, a in ((ApiToken, "k"), (Membership, "m"), (get_user_model(), "u"), (Tenant, "t"))]
    # Names from model metadata only; the digest and the time are parameters.
    sql = (
        f"SELECT {', '.join(c for _, cols in parts for c in cols)} FROM {ApiToken._meta.db_table} k "  # noqa: S608
        f"JOIN {Membership._meta.db_table} m ON m.id = k.membership_id "
        f"JOIN {get_user_model()._meta.db_table} u ON u.id = m.user_id "
        f"JOIN {Tenant._meta.db_table} t ON t.id = m.tenant_id "
        "WHERE k.digest = %s AND k.revoked_at IS NULL AND k.expires_at > %s AND t.is_active"
    )
    return sql, [names for names, _ in parts]


def _usable_token(digest: str) -> ApiToken | None:
    if connection.vendor != "postgresql":  # other databases: the ORM, which converts their values
        return (
            ApiToken.objects.usable()
            .select_related("membership__user", "membership__tenant")
            .filter(digest=digest)
            .first()
        )
    global _TOKEN_SQL
    if _TOKEN_SQL is None:
        _TOKEN_SQL = _token_query()
    sql, names = _TOKEN_SQL
    with connection.cursor() as cursor:
        cursor.execute(sql, [digest, timezone.now()])
        row = cursor.fetchone()
    if row is None:
        return None
    objects, start = [], 0
    for model, cols in zip((ApiToken, Membership, get_user_model(), Tenant), names, strict=True):
        objects.append(model.from_db(connection.alias, cols, row[start : start + len(cols)]))
        start += len(cols)
    token, membership, user, tenant = objects
    membership.user, membership.tenant = user, tenant
    token.membership = membership
    return token


_TOKEN_SQL = None


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keywords = ("token", "bearer")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower().decode(errors="replace") not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Token <secret>'.")
        try:
            secret = header[1].decode()
        except UnicodeError as exc:
            raise exceptions.AuthenticationFailed("Token contains invalid characters.") from exc
        token = _usable_token(token_digest(secret))
        # is_usable: also BSN_TOKEN_MAX_TTL_DAYS, whichever way the row was fetched.
        if token is None or not token.is_usable or not token.membership.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.membership.user, token

    def authenticate_header(self, request) -> str:
        return 'Token realm="api"'

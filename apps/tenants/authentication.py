"""Bearer tokens: ``Authorization: Token <secret>`` (or ``Bearer``), looked up by SHA-256 digest."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from apps.tenants.models import ApiToken, token_digest

_LAST_USED_RESOLUTION = timedelta(minutes=1)


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
        token = (
            ApiToken.objects.usable()
            .select_related("membership__user", "membership__tenant")
            .filter(digest=token_digest(secret))
            .first()
        )
        # is_usable: also BSN_TOKEN_MAX_TTL_DAYS, whichever way the row was fetched.
        if token is None or not token.is_usable or not token.membership.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.membership.user, token

    def authenticate_header(self, request) -> str:
        return 'Token realm="api"'

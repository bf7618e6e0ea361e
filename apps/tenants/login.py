"""Logging in: one answer for every refusal, and lockouts after repeated failures.

Counting failures and locking out is django-axes's job (settings ``AXES_*``): it sees every
failed ``authenticate()`` of the API log-in and of the Django admin, per client address and
per username, in the database that every web process shares. This module only adapts it:
which address a request comes from, what a locked-out client is answered, and a log-in
that must fail although the password was right (an account in no active tenant).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate, user_login_failed
from django.http import HttpResponse, JsonResponse

from apps.common.errors import PROBLEM_CONTENT_TYPE, problem
from apps.tenants import services


def _http_request(request):
    # DRF's Request wraps Django's; axes flags the Django one for its middleware.
    return getattr(request, "_request", request)


def client_address(request) -> str:
    """The client's address: the socket's, or the one the outermost trusted proxy saw."""
    count = settings.BSN_TRUSTED_PROXY_COUNT
    if count:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        # Each trusted proxy appends the address it received from: the entry `count` from
        # the right is the client as the first trusted proxy saw it; anything left of it
        # is whatever the client chose to send.
        if len(hops) >= count:
            return hops[-count]
    return request.META.get("REMOTE_ADDR", "")


def retry_after_seconds() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """429 with Retry-After: problem+json on the API, a page on the portal, plain text on the admin."""
    detail = "Too many failed log-ins from this address or for this username; try again later."
    if request.path.startswith("/portal/"):
        from django.template.loader import render_to_string

        html = render_to_string("portal/error.html", {"title": "Too many failed sign-ins", "detail": detail})
        response: HttpResponse = HttpResponse(html, status=429)
    elif request.path.startswith("/api/"):
        body = problem(429, "login-locked", "Too many requests", detail, instance=request.path)
        response = JsonResponse(body, status=429, content_type=PROBLEM_CONTENT_TYPE)
    else:
        response = HttpResponse(detail + "\n", status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(retry_after_seconds())
    return response


def login(*, request, username: str, password: str, tenant_slug: str | None) -> services.IssuedToken | None:
    """A new log-in token, or None for every refusal (wrong password, unknown or inactive
    user, locked out, or a right password for an account with no active tenant — the
    platform superuser, a removed member — which must not be told apart from a wrong one).
    """
    user = _authenticate(request, username, password)
    if user is None:
        return None
    membership = services.login_membership(user=user, tenant_slug=tenant_slug)
    if membership is None:
        _count_failure(request, username)
        return None
    return services.login_issue_token(membership=membership, request=request)


def session_login(*, request, username: str, password: str):
    """The user for a browser session (the portal), or None for every refusal, counted and
    locked out exactly like the API's log-in. A user of several tenants picks one afterwards."""
    user = _authenticate(request, username, password)
    if user is None:
        return None
    if services.login_membership_count(user=user) == 0:
        _count_failure(request, username)
        return None
    return user


def _authenticate(request, username: str, password: str):
    return authenticate(_http_request(request), username=username, password=password)


def _count_failure(request, username: str) -> None:
    # Counted by axes like a wrong password, so this path cannot be used to try
    # passwords of the platform's own accounts without limit either.
    user_login_failed.send(sender=__name__, credentials={"username": username}, request=_http_request(request))

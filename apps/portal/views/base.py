"""What every portal page shares: who is signed in, which tenant they act for, what their
role allows, and how a service's refusal becomes a page a person can act on.

The rules are the API's, not a copy: the tenant comes from ``request_membership`` (the same
function the API asks), querysets are scoped by ``scope_to_tenant`` (the same one
``TenantScopedViewSet`` uses), roles are compared with ``Membership.has_role``, inputs are
validated by the API's input serializers and writes go through the same service functions.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views import View
from rest_framework.exceptions import ValidationError

from apps.common.errors import DomainError
from apps.portal import navshow
from apps.tenants.context import request_membership, scope_to_tenant
from apps.tenants.models import Membership, Role

# The main navigation: (section, label, url name[, shown(membership) -> bool]). Each area adds
# its entry here; an entry with a fourth element is listed only when it answers True.
NAV: list[tuple] = [
    ("dashboard", "Dashboard", "portal:dashboard"),
    ("apps", "Apps", "portal:apps"),  # chain apps (views/apps.py)
    # team and money (apps/portal/views/team.py, money.py)
    ("team", "Team", "portal:team"),
    ("tokens", "Tokens", "portal:tokens", navshow.is_admin),
    ("dcep", "Digital currency", "portal:dcep", navshow.dcep_participant),
    ("billing", "Billing", "portal:billing", navshow.is_admin),
]


def login_url(request) -> str:
    return reverse("portal:login") + "?" + urlencode({"next": request.get_full_path()})


def error_page(request, status: int, title: str, detail: str, *, action: tuple[str, str] | None = None):
    """A page that says what went wrong and what to do next (``action``: label, url)."""
    return render(request, "portal/error.html", {"title": title, "detail": detail, "action": action}, status=status)


def serializer_errors(exc: ValidationError) -> dict[str, list[str]]:
    """``{field: [messages]}`` of an API input serializer's refusal, for a form to show."""
    detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
    out: dict[str, list[str]] = {}
    for field, value in detail.items():
        items = value if isinstance(value, list) else [value]
        out[str(field)] = [
            str(v) if not isinstance(v, dict) else "; ".join(f"{k}: {x}" for k, x in v.items()) for v in items
        ]
    return out


class PortalView(View):
    """A signed-in member's page. GET needs ``read_role``; other methods ``write_role``.

    Subclasses implement ``get``/``post`` and render with ``self.render(template, context)``.
    A service's ``DomainError`` raised by a POST is shown on the page the user came from
    as a message (their input is not lost: forms re-render with it where they catch it).
    """

    read_role = Role.VIEWER
    write_role = Role.DEVELOPER
    section = ""  # which navigation entry is highlighted

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return HttpResponseRedirect(login_url(request))
        self.membership: Membership | None = request_membership(request)
        if self.membership is None:
            return HttpResponseRedirect(
                reverse("portal:choose-tenant") + "?" + urlencode({"next": request.get_full_path()})
            )
        needed = self.read_role if request.method in ("GET", "HEAD", "OPTIONS") else self.write_role
        if not self.membership.has_role(needed):
            return error_page(
                request,
                403,
                "Your role does not allow this",
                f"You are {self.membership.role} in {self.membership.tenant.name}; this needs {needed} or above. "
                "Ask an owner or admin of the tenant to change your role.",
                action=("Back to the dashboard", reverse("portal:dashboard")),
            )
        try:
            return super().dispatch(request, *args, **kwargs)
        except Http404:
            # Another tenant's object is "not found" here too: its existence is not revealed.
            return error_page(
                request,
                404,
                "Not found",
                "There is nothing here, or it belongs to another tenant.",
                action=("Back to the dashboard", reverse("portal:dashboard")),
            )
        except DomainError as exc:
            if request.method == "GET":
                return error_page(request, exc.status_code, exc.title, exc.detail)
            messages.error(request, exc.detail)
            return HttpResponseRedirect(request.META.get("HTTP_REFERER") or request.path)

    @property
    def tenant(self):
        return self.membership.tenant

    def scope(self, queryset, tenant_field: str = "tenant"):
        return scope_to_tenant(queryset, self.tenant, tenant_field)

    def can(self, role: str) -> bool:
        return self.membership.has_role(role)

    def render(self, template: str, context: dict | None = None, status: int = 200):
        base = {
            "membership": self.membership,
            "tenant": self.tenant,
            "section": self.section,
            "can_write": self.can(Role.DEVELOPER),
            "can_admin": self.can(Role.ADMIN),
            "portal_nav": [
                {"section": entry[0], "label": entry[1], "url": reverse(entry[2])}
                for entry in NAV
                if len(entry) < 4 or entry[3](self.membership)
            ],
            "other_tenants": Membership.objects.usable_by(self.request.user)
            .exclude(pk=self.membership.pk)
            .order_by("tenant__name"),
        }
        return render(self.request, template, {**base, **(context or {})}, status=status)

"""Signing in and out of the portal, and choosing the tenant to act for."""

from __future__ import annotations

from django.contrib import auth, messages
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View

from apps.audit.services import audit_record
from apps.tenants.context import SESSION_TENANT
from apps.tenants.login import session_login
from apps.tenants.models import Membership


def _next(request, default: str) -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if wanted and url_has_allowed_host_and_scheme(wanted, {request.get_host()}, require_https=request.is_secure()):
        return wanted
    return default


class LoginView(View):
    """Username and password; the API's lockout applies (django-axes counts every refusal)."""

    def get(self, request):
        if request.user.is_authenticated:
            return HttpResponseRedirect(_next(request, reverse("portal:dashboard")))
        return render(request, "portal/login.html", {"next": _next(request, "")})

    def post(self, request):
        username = request.POST.get("username", "").strip()
        password = request.POST.get("password", "")
        if not username or not password:
            return self._refused(request, username, "Enter your username and your password.")
        user = session_login(request=request, username=username, password=password)
        if user is None:
            # One answer for every refusal, as the API's log-in gives.
            return self._refused(
                request, username, "That username and password do not match an account of an active tenant."
            )
        request.session.pop(SESSION_TENANT, None)
        auth.login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        memberships = list(Membership.objects.usable_by(user)[:2])
        if len(memberships) == 1:
            request.session[SESSION_TENANT] = memberships[0].tenant.slug
            audit_record(
                action="portal.login",
                object_type="user",
                object_id=user.pk,
                tenant=memberships[0].tenant,
                actor=user,
                request=request,
            )
        target = _next(request, reverse("portal:dashboard"))
        if len(memberships) > 1:
            return HttpResponseRedirect(reverse("portal:choose-tenant") + "?next=" + target)
        return HttpResponseRedirect(target)

    def _refused(self, request, username: str, error: str):
        return render(
            request, "portal/login.html", {"error": error, "username": username, "next": _next(request, "")}, status=400
        )


class LogoutView(View):
    """POST only (a link could sign a person out from another site)."""

    def post(self, request):
        auth.logout(request)
        messages.info(request, "You are signed out.")
        return HttpResponseRedirect(reverse("portal:login"))


class ChooseTenantView(View):
    """A member of several tenants picks the one the session acts for (and can switch later)."""

    def get(self, request):
        if not request.user.is_authenticated:
            return HttpResponseRedirect(reverse("portal:login"))
        memberships = Membership.objects.usable_by(request.user)
        return render(
            request,
            "portal/choose_tenant.html",
            {
                "memberships": memberships.order_by("tenant__name"),
                "next": _next(request, ""),
                "current": request.session.get(SESSION_TENANT),
            },
        )

    def post(self, request):
        if not request.user.is_authenticated:
            return HttpResponseRedirect(reverse("portal:login"))
        slug = request.POST.get("tenant", "")
        membership = Membership.objects.usable_by(request.user).filter(tenant__slug=slug).first()
        if membership is None:
            messages.error(request, "You are not a member of that tenant.")
            return HttpResponseRedirect(reverse("portal:choose-tenant"))
        request.session[SESSION_TENANT] = membership.tenant.slug
        audit_record(
            action="portal.switch_tenant",
            object_type="user",
            object_id=request.user.pk,
            tenant=membership.tenant,
            actor=request.user,
            request=request,
        )
        messages.success(request, f"You now act for {membership.tenant.name} as {membership.role}.")
        return HttpResponseRedirect(_next(request, reverse("portal:dashboard")))

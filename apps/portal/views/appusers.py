"""An app's users and their keys (``/portal/apps/<app id>/users/``).

As ``AppUserViewSet``: viewers read, developers register (a public key they upload, or a
key the platform keeps: custody mode) and revoke, admins export a custody key, once. The
input is checked by the API's ``AppUserCreateInputSerializer``; registering and revoking
are ledger transactions (``appuser_create``, ``custody_user_create``, ``appuser_revoke``).
The exported key appears only on the answer to the export POST (no-store).
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from rest_framework.exceptions import APIException

from apps.chainapps.models import ChainApp
from apps.common.errors import DomainError
from apps.custody import services as custody
from apps.gateway import services as gateway
from apps.gateway.api.serializers import AppUserCreateInputSerializer
from apps.gateway.models import AppUser
from apps.portal.views.forms import ServicePage, no_store, page_of, parse_uuid, posted, validated
from apps.tenants.models import Role


class AppPage(ServicePage):
    """A page under one of the tenant's apps: the app is scoped first (another tenant's is a 404)."""

    section = "apps"

    def app(self, app_id) -> ChainApp:
        return get_object_or_404(self.scope(ChainApp.objects.select_related("tenant")), pk=parse_uuid(app_id))

    def back_url(self) -> str:
        return reverse("portal:appusers", args=[self.kwargs["app_id"]])


class AppUserPage(AppPage):
    def user(self, app: ChainApp, pk) -> AppUser:
        users = self.scope(AppUser.objects.select_related("app__tenant"), "app__tenant").filter(app=app)
        return get_object_or_404(users, pk=parse_uuid(pk))


class AppUsersView(AppUserPage):
    def context(self, app: ChainApp) -> dict:
        users = self.scope(AppUser.objects.select_related("created_by"), "app__tenant").filter(app=app)
        return {
            "app": app,
            "users": page_of(self.request, users.order_by("name")),
            "can_export": self.can(Role.ADMIN),
            "form": {"mode": AppUser.Mode.UPLOAD},
        }

    def get(self, request, app_id):
        return self.render("portal/appusers/list.html", self.context(self.app(app_id)))

    def post(self, request, app_id):
        app = self.app(app_id)
        data = posted(request, ("name", "mode", "public_key"))
        if data.get("mode") == AppUser.Mode.CUSTODY:
            data.pop("public_key", None)  # the form keeps the box; custody mode has no key to send
        try:
            values = validated(AppUserCreateInputSerializer, data)
            if values["mode"] == AppUser.Mode.CUSTODY:
                user = custody.custody_user_create(app=app, actor=request.user, name=values["name"], request=request)
            else:
                user = gateway.appuser_create(
                    app=app, actor=request.user, name=values["name"], public_key=values["public_key"], request=request
                )
        except (APIException, DomainError) as exc:
            return self.form_error("portal/appusers/list.html", {**self.context(app), "form": data}, exc)
        how = "the platform keeps its key" if user.mode == AppUser.Mode.CUSTODY else "it signs with your key"
        messages.success(request, f"User {user.name} is registered on the ledger ({how}).")
        return HttpResponseRedirect(reverse("portal:appusers", args=[app.pk]))


class AppUserRevokeView(AppUserPage):
    read_role = Role.DEVELOPER  # the confirmation is only shown to someone who may revoke

    def get(self, request, app_id, pk):
        app = self.app(app_id)
        user = self.user(app, pk)
        custody_note = " Its key, kept by the platform, is destroyed." if user.mode == AppUser.Mode.CUSTODY else ""
        return self.render(
            "portal/team/confirm.html",
            {
                "app": app,
                "title": f"Revoke user {user.name} of {app.name}?",
                "detail": "The app's nodes refuse its transactions from the block that records the revocation."
                + custody_note
                + " This cannot be undone.",
                "button": "Revoke user",
                "cancel": reverse("portal:appusers", args=[app.pk]),
            },
        )

    def post(self, request, app_id, pk):
        app = self.app(app_id)
        user = gateway.appuser_revoke(user=self.user(app, pk), actor=request.user, request=request)
        messages.success(request, f"User {user.name} is revoked.")
        return HttpResponseRedirect(reverse("portal:appusers", args=[app.pk]))


class AppUserExportView(AppUserPage):
    """A custody key, handed out once to an admin: GET warns, POST shows it (and never again)."""

    read_role = Role.ADMIN
    write_role = Role.ADMIN  # as the API's export action

    def get(self, request, app_id, pk):
        app = self.app(app_id)
        user = self.user(app, pk)
        return self.render("portal/appusers/export.html", {"app": app, "appuser": user})

    def post(self, request, app_id, pk):
        app = self.app(app_id)
        exported = custody.custody_export(user=self.user(app, pk), actor=request.user, request=request)
        page = self.render(
            "portal/appusers/exported.html", {"app": app, "appuser": exported.user, "exported": exported}
        )
        return no_store(page)

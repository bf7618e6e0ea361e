"""Members and roles (``/portal/team/``) and API tokens (``/portal/tokens/``).

The API's rules, not a copy: ``MemberViewSet`` lets every member read the team and admins
change it (``member_add``/``member_change_role``/``member_remove`` decide who may touch an
owner); ``TokenViewSet`` is for admins and owners, tokens are issued for the signed-in
member with ``token_issue`` and revoked with ``token_revoke``. A token's secret is shown on
the answer to the POST that created it and nowhere else (no-store; only its digest is kept).
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from rest_framework.exceptions import APIException

from apps.common.errors import DomainError
from apps.portal.views.base import error_page
from apps.portal.views.forms import (
    ServicePage,
    already_sent,
    form_id,
    mark_sent,
    no_store,
    page_of,
    parse_uuid,
    posted,
    validated,
)
from apps.tenants import services
from apps.tenants.api.serializers import (
    MemberCreateInputSerializer,
    MemberUpdateInputSerializer,
    TokenCreateInputSerializer,
)
from apps.tenants.models import ApiToken, Membership, Role

MEMBER_FIELDS = ("username", "email", "role", "password")


class TeamPage(ServicePage):
    section = "team"
    write_role = Role.ADMIN  # as MemberViewSet

    def back_url(self) -> str:
        return reverse("portal:team")

    def member(self, pk) -> Membership:
        return get_object_or_404(self.scope(Membership.objects.select_related("user", "tenant")), pk=parse_uuid(pk))


class TeamView(TeamPage):
    """The tenant's members with their roles; admins add, re-role and remove them."""

    def context(self) -> dict:
        members = self.scope(Membership.objects.select_related("user")).order_by("created_at")
        return {
            "members": members,
            "roles": [value for value, _ in Role.choices],
            "grantable": [value for value, _ in Role.choices if value != Role.OWNER or self.can(Role.OWNER)],
            "login_suffix": f"@{self.tenant.slug}",
        }

    def get(self, request):
        return self.render("portal/team/members.html", {**self.context(), "form": {"role": Role.DEVELOPER}})

    def post(self, request):
        data = posted(request, MEMBER_FIELDS)
        form = {k: v for k, v in data.items() if k != "password"}  # a password is never sent back
        try:
            values = validated(MemberCreateInputSerializer, data)
            membership = services.member_add(
                tenant=self.tenant, actor_membership=self.membership, request=request, **values
            )
        except (APIException, DomainError) as exc:
            return self.form_error("portal/team/members.html", {**self.context(), "form": form}, exc)
        messages.success(
            request,
            f"{membership.user.username} is now {membership.role} of {self.tenant.name}. They sign in with that "
            "name and the password you chose; tell them through a channel you trust.",
        )
        return HttpResponseRedirect(reverse("portal:team"))


class MemberRoleView(TeamPage):
    def post(self, request, pk):
        membership = self.member(pk)
        values = validated(MemberUpdateInputSerializer, posted(request, ("role",)))
        changed = services.member_change_role(
            membership=membership, actor_membership=self.membership, role=values["role"], request=request
        )
        messages.success(request, f"{changed.user.username} is now {changed.role}.")
        return HttpResponseRedirect(reverse("portal:team"))


class MemberRemoveView(TeamPage):
    """GET asks to confirm; POST removes (the account stays; its tokens are revoked)."""

    read_role = Role.ADMIN  # the question is only put to someone who may answer it

    def get(self, request, pk):
        membership = self.member(pk)
        return self.render(
            "portal/team/confirm.html",
            {
                "title": f"Remove {membership.user.username}?",
                "detail": f"{membership.user.username} ({membership.role}) can no longer act for {self.tenant.name}; "
                "their API tokens stop working at once. The account itself is kept.",
                "button": "Remove member",
                "cancel": reverse("portal:team"),
            },
        )

    def post(self, request, pk):
        membership = self.member(pk)
        name = membership.user.username
        services.member_remove(membership=membership, actor_membership=self.membership, request=request)
        messages.success(request, f"{name} is no longer a member; their tokens are revoked.")
        return HttpResponseRedirect(reverse("portal:team"))


# --------------------------------------------------------------------------- API tokens


class TokenPage(ServicePage):
    section = "tokens"
    read_role = Role.ADMIN  # as TokenViewSet
    write_role = Role.ADMIN

    def back_url(self) -> str:
        return reverse("portal:tokens")


class TokensView(TokenPage):
    """The tenant's tokens (prefix, owner, expiry, last use); create one for yourself."""

    def context(self) -> dict:
        tokens = self.scope(ApiToken.objects.select_related("membership__user"), "membership__tenant")
        show_all = self.request.GET.get("all") == "1"
        if not show_all:
            tokens = tokens.usable()
        return {
            "tokens": page_of(self.request, tokens.order_by("-created_at")),
            "show_all": show_all,
            "form_id": form_id(),
        }

    def get(self, request):
        return self.render("portal/team/tokens.html", self.context())

    def post(self, request):
        if already_sent(request):
            return error_page(
                request,
                409,
                "This token was already created",
                "This form was sent before and its token created; its secret was shown once, on that answer. "
                "If you did not copy it, revoke that token and create another.",
                action=("Back to the tokens", reverse("portal:tokens")),
            )
        data = posted(request, ("name", "expires_in_days"))
        try:
            values = validated(TokenCreateInputSerializer, data)
            issued = services.token_issue(
                membership=self.membership,
                name=values["name"],
                ttl_days=values.get("expires_in_days"),
                actor=request.user,
                request=request,
            )
        except (APIException, DomainError) as exc:
            return self.form_error("portal/team/tokens.html", {**self.context(), "form": data}, exc)
        mark_sent(request)
        page = self.render("portal/team/token_created.html", {"token": issued.token, "secret": issued.secret})
        return no_store(page)


class TokenRevokeView(TokenPage):
    def token(self, pk) -> ApiToken:
        tokens = self.scope(
            ApiToken.objects.select_related("membership__user", "membership__tenant"), "membership__tenant"
        )
        return get_object_or_404(tokens, pk=parse_uuid(pk))

    def get(self, request, pk):
        token = self.token(pk)
        return self.render(
            "portal/team/confirm.html",
            {
                "title": f"Revoke token {token.name} ({token.prefix}…)?",
                "detail": f"Programs using it (issued for {token.membership.user.username}) are refused from now on. "
                "This cannot be undone: create a new token to replace it.",
                "button": "Revoke token",
                "cancel": reverse("portal:tokens"),
            },
        )

    def post(self, request, pk):
        token = services.token_revoke(token=self.token(pk), actor=request.user, request=request)
        messages.success(request, f"Token {token.name} ({token.prefix}…) is revoked.")
        return HttpResponseRedirect(reverse("portal:tokens"))

"""Role checks: viewer reads; developer manages apps; admin also members and tokens; owner all."""

from __future__ import annotations

from rest_framework import permissions

from apps.tenants.context import request_membership
from apps.tenants.models import Role


class IsTenantMember(permissions.BasePermission):
    """Authenticated, acting for a tenant, and holding the role the view asks for this action."""

    message = "Your role in this tenant does not allow this action."

    def has_permission(self, request, view) -> bool:
        if request.user is None or not request.user.is_authenticated:
            return False
        membership = request_membership(request)
        if membership is None:
            self.message = "You are not a member of an active tenant (set X-BSN-Tenant if you belong to several)."
            return False
        return membership.has_role(required_role(request, view))


def required_role(request, view) -> str:
    action = getattr(view, "action", None)
    roles = getattr(view, "action_roles", {})
    if action in roles:
        return roles[action]
    if request.method in permissions.SAFE_METHODS:
        return getattr(view, "read_role", Role.VIEWER)
    return getattr(view, "write_role", Role.DEVELOPER)

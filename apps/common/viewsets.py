"""The one place where API querysets are scoped to the caller's tenant."""

from __future__ import annotations

from rest_framework import viewsets

from apps.tenants.context import request_membership, scope_to_tenant
from apps.tenants.models import Role


class TenantScopedViewSet(viewsets.GenericViewSet):
    """Every list and detail goes through ``get_queryset``, filtered by ``tenant_field``.

    Another tenant's object therefore never matches: its detail is a 404.
    """

    tenant_field = "tenant"
    read_role = Role.VIEWER
    write_role = Role.DEVELOPER
    action_roles: dict[str, str] = {}

    @property
    def membership(self):
        return request_membership(self.request)

    @property
    def tenant(self):
        membership = self.membership
        return membership.tenant if membership else None

    def get_queryset(self):
        return self.scope(super().get_queryset())

    def scope(self, queryset, tenant_field: str | None = None):
        """``queryset`` limited to the caller's tenant through ``tenant_field``.

        Also for the parent object of a nested route (an app's users look their app up
        through ``scope(ChainApp.objects.all(), "tenant")``).
        """
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return queryset.none()
        return scope_to_tenant(queryset, self.tenant, tenant_field or self.tenant_field)

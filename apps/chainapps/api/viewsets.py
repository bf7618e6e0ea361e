"""Base viewset of the resources nested under one chain app (``/apps/{app_id}/…``)."""

from __future__ import annotations

import uuid

from rest_framework.exceptions import NotFound

from apps.chainapps.models import ChainApp
from apps.common.viewsets import TenantScopedViewSet


def parse_uuid(value) -> uuid.UUID:
    """A path segment as a UUID; anything else is a 404 (no such object), never a 400 or 500."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound() from None


class AppChildViewSet(TenantScopedViewSet):
    """The parent app is looked up through the tenancy scope (another tenant's app is a
    404, as an unknown one) and a list holds only that app's rows. Used by the app's users
    (apps/gateway) and webhooks (apps/webhooks)."""

    tenant_field = "app__tenant"
    app_url_kwarg = "app_id"

    def get_app(self) -> ChainApp:
        cached = getattr(self, "_parent_app", None)
        if cached is not None:
            return cached
        app_id = parse_uuid(self.kwargs.get(self.app_url_kwarg))
        app = self.scope(ChainApp.objects.select_related("tenant"), "tenant").filter(pk=app_id).first()
        if app is None:
            raise NotFound()
        self._parent_app = app
        return app

    def get_queryset(self):
        queryset = super().get_queryset()
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return queryset
        return queryset.filter(app=self.get_app())

"""URL map: /api/v1/ (REST), /admin/ (operators), /healthz and /readyz (probes)."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from apps.audit.api import AuditEventViewSet
from apps.chainapps.api.views import AppViewSet, FrameworkViewSet, OperationViewSet
from apps.common.health import healthz, readyz
from apps.common.routers import OptionalSlashRouter
from apps.gateway.api.views import AppLedgerViewSet, AppUserViewSet
from apps.regions.api.views import RegionViewSet
from apps.tenants.api.views import LoginView, LogoutView, MemberViewSet, TenantView, TokenViewSet

router = OptionalSlashRouter()
router.register("tenant/members", MemberViewSet, basename="member")
router.register("tokens", TokenViewSet, basename="token")
router.register("regions", RegionViewSet, basename="region")
router.register("frameworks", FrameworkViewSet, basename="framework")
router.register("apps", AppViewSet, basename="app")
router.register("apps", AppLedgerViewSet, basename="app-ledger")  # transactions, blocks, state, chain
router.register(r"apps/(?P<app_id>[0-9a-fA-F-]{36})/users", AppUserViewSet, basename="appuser")
router.register("operations", OperationViewSet, basename="operation")
router.register("audit-events", AuditEventViewSet, basename="auditevent")

public = {"permission_classes": [AllowAny], "authentication_classes": []}

api_v1 = [
    path("auth/login", LoginView.as_view(), name="auth-login"),
    path("auth/logout", LogoutView.as_view(), name="auth-logout"),
    path("tenant", TenantView.as_view(), name="tenant"),
    path("schema", SpectacularAPIView.as_view(**public), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema", **public), name="docs"),
    path("dcep/", include("apps.dcep.api.urls")),
    path("", include("apps.webhooks.api.urls")),
    *router.urls,
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
]

handler404 = "apps.common.errors.api_not_found"
handler500 = "apps.common.errors.api_server_error"

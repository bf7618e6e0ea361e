"""URL map: /api/v1/ (REST), /portal/ (tenants; / leads there), /admin/ (operators),
/healthz and /readyz (probes), /metrics (Prometheus)."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from apps.audit.api import AuditEventViewSet
from apps.billing.api import urls as billing_urls
from apps.chainapps.api.views import AppViewSet, FrameworkViewSet, OperationViewSet
from apps.common.api.index import api_index
from apps.common.health import healthz, readyz
from apps.common.routers import OptionalSlashRouter, optional_slash
from apps.gateway.api.views import AppLedgerViewSet, AppUserViewSet
from apps.metering.api.views import AppUsageViewSet, TenantUsageView
from apps.metering.prometheus import metrics_view
from apps.regions.api.views import RegionViewSet
from apps.tenants.api.views import LoginView, LogoutView, MemberViewSet, TenantView, TokenViewSet

router = OptionalSlashRouter()
router.register("tenant/members", MemberViewSet, basename="member")
router.register("tokens", TokenViewSet, basename="token")
router.register("regions", RegionViewSet, basename="region")
router.register("frameworks", FrameworkViewSet, basename="framework")
router.register("apps", AppViewSet, basename="app")
router.register("apps", AppLedgerViewSet, basename="app-ledger")  # transactions, blocks, state, chain
router.register("apps", AppUsageViewSet, basename="app-usage")
router.register(r"apps/(?P<app_id>[0-9a-fA-F-]{36})/users", AppUserViewSet, basename="appuser")
router.register("operations", OperationViewSet, basename="operation")
router.register("audit-events", AuditEventViewSet, basename="auditevent")

public = {"permission_classes": [AllowAny], "authentication_classes": []}

api_v1 = [
    path("", api_index, name="api-index"),
    optional_slash("auth/login", LoginView.as_view(), name="auth-login"),
    optional_slash("auth/logout", LogoutView.as_view(), name="auth-logout"),
    optional_slash("tenant", TenantView.as_view(), name="tenant"),
    optional_slash("tenant/usage", TenantUsageView.as_view(), name="tenant-usage"),
    optional_slash("schema", SpectacularAPIView.as_view(**public), name="schema"),
    optional_slash("docs", SpectacularSwaggerView.as_view(url_name="schema", **public), name="docs"),
    path("dcep/", include("apps.dcep.api.urls")),
    path("", include("apps.webhooks.api.urls")),
    path("tenant/", include(billing_urls.tenant_urlpatterns)),
    path("billing/", include(billing_urls.billing_urlpatterns)),
    *router.urls,
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("admin/console/", include("apps.console.urls")),  # before the admin's catch-all
    path("admin/", admin.site.urls),
    path("portal/", include("apps.portal.urls")),
    path("", RedirectView.as_view(pattern_name="portal:dashboard"), name="home"),
    # Browsers ask for /favicon.ico on every page (the admin's too): a 404 there is a console
    # error on each page load (found by tests/browser).
    path("favicon.ico", RedirectView.as_view(url=f"/{settings.STATIC_URL}portal/favicon.svg".replace("//", "/"))),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]

# HTML pages under /portal/ and /admin/, the API's problem+json elsewhere (apps/portal/errors.py).
handler404 = "apps.portal.errors.page_or_problem_404"
handler500 = "apps.portal.errors.page_or_problem_500"

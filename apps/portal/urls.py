"""The tenant portal's URLs (``/portal/``). Each area's views live in their own module."""

from django.urls import path

from apps.portal.views import apps, auth, dashboard, ledger, operations

app_name = "portal"

urlpatterns = [
    path("", dashboard.DashboardView.as_view(), name="dashboard"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    path("tenant/", auth.ChooseTenantView.as_view(), name="choose-tenant"),
    # apps: create, detail, ledger, operations (apps/portal/views/apps.py, ledger.py, operations.py)
    path("apps/", apps.AppListView.as_view(), name="apps"),
    path("apps/new/", apps.AppCreateView.as_view(), name="app-new"),
    path("apps/<uuid:pk>/", apps.AppDetailView.as_view(), name="app"),
    path("apps/<uuid:pk>/start/", apps.AppLifecycleView.as_view(action="start"), name="app-start"),
    path("apps/<uuid:pk>/stop/", apps.AppLifecycleView.as_view(action="stop"), name="app-stop"),
    path("apps/<uuid:pk>/delete/", apps.AppLifecycleView.as_view(action="delete"), name="app-delete"),
    path("apps/<uuid:pk>/blocks/<int:height>/", ledger.BlockView.as_view(), name="app-block"),
    path("apps/<uuid:pk>/state/", ledger.StateView.as_view(), name="app-state"),
    path("apps/<uuid:pk>/operations/", operations.AppOperationsView.as_view(), name="app-operations"),
    path("operations/<uuid:pk>/", operations.OperationView.as_view(), name="operation"),
    path("operations/<uuid:pk>/status/", operations.OperationView.as_view(fragment=True), name="operation-status"),
    # team: app users and keys, webhooks, members, tokens
    # money: DCEP, billing
]

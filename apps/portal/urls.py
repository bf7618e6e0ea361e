"""The tenant portal's URLs (``/portal/``). Each area's views live in their own module."""

from django.urls import path

from apps.portal.views import auth, dashboard

app_name = "portal"

urlpatterns = [
    path("", dashboard.DashboardView.as_view(), name="dashboard"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    path("tenant/", auth.ChooseTenantView.as_view(), name="choose-tenant"),
    # apps: create, detail, ledger, operations (apps/portal/views/apps.py …)
    # team: app users and keys, webhooks, members, tokens
    # money: DCEP, billing
]

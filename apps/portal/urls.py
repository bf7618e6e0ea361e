"""The tenant portal's URLs (``/portal/``). Each area's views live in their own module."""

from django.urls import path

from apps.portal.views import apps, appusers, auth, changes, dashboard, ledger, money, operations, team, webhooks

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
    # changes: upgrade, scale, cancel an operation (apps/portal/views/changes.py)
    path("apps/<uuid:pk>/upgrade/", changes.AppUpgradeView.as_view(), name="app-upgrade"),
    path("apps/<uuid:pk>/scale/", changes.AppScaleView.as_view(), name="app-scale"),
    path("operations/<uuid:pk>/cancel/", changes.OperationCancelView.as_view(), name="operation-cancel"),
    # team: app users and keys, webhooks, members, tokens (apps/portal/views/appusers.py, webhooks.py, team.py)
    path("apps/<str:app_id>/users/", appusers.AppUsersView.as_view(), name="appusers"),
    path("apps/<str:app_id>/users/<str:pk>/revoke/", appusers.AppUserRevokeView.as_view(), name="appuser-revoke"),
    path("apps/<str:app_id>/users/<str:pk>/export/", appusers.AppUserExportView.as_view(), name="appuser-export"),
    path("apps/<str:app_id>/webhooks/", webhooks.WebhooksView.as_view(), name="webhooks"),
    path("apps/<str:app_id>/webhooks/<str:pk>/", webhooks.WebhookView.as_view(), name="webhook"),
    path("apps/<str:app_id>/webhooks/<str:pk>/active/", webhooks.WebhookActiveView.as_view(), name="webhook-active"),
    path("apps/<str:app_id>/webhooks/<str:pk>/delete/", webhooks.WebhookDeleteView.as_view(), name="webhook-delete"),
    path(
        "apps/<str:app_id>/webhooks/<str:pk>/deliveries/<str:delivery_id>/redeliver/",
        webhooks.DeliveryRedeliverView.as_view(),
        name="delivery-redeliver",
    ),
    path("team/", team.TeamView.as_view(), name="team"),
    path("team/<str:pk>/role/", team.MemberRoleView.as_view(), name="member-role"),
    path("team/<str:pk>/remove/", team.MemberRemoveView.as_view(), name="member-remove"),
    path("tokens/", team.TokensView.as_view(), name="tokens"),
    path("tokens/<str:pk>/revoke/", team.TokenRevokeView.as_view(), name="token-revoke"),
    # money: DCEP, billing (apps/portal/views/money.py)
    path("dcep/", money.DcepView.as_view(), name="dcep"),
    path("dcep/wallets/<str:number>/", money.WalletView.as_view(), name="dcep-wallet"),
    path("dcep/transfers/", money.TransfersView.as_view(), name="dcep-transfers"),
    path("dcep/holds/", money.HoldsView.as_view(), name="dcep-holds"),
    path("dcep/settlements/", money.SettlementsView.as_view(), name="dcep-settlements"),
    path("billing/", money.BillingView.as_view(), name="billing"),
    path("billing/invoices/<str:pk>/", money.InvoiceView.as_view(), name="invoice"),
]

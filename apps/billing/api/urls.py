"""Routes of billing: /api/v1/tenant/invoices (the tenant's) and /api/v1/billing/ (prices, runs)."""

from apps.billing.api.views import BillingView, InvoiceViewSet, MonthCloseView, PriceViewSet
from apps.common.routers import OptionalSlashRouter, optional_slash

tenant_router = OptionalSlashRouter()
tenant_router.register("invoices", InvoiceViewSet, basename="invoice")

billing_router = OptionalSlashRouter()
billing_router.register("prices", PriceViewSet, basename="billing-price")

tenant_urlpatterns = [optional_slash("billing", BillingView.as_view(), name="tenant-billing"), *tenant_router.urls]
billing_urlpatterns = [
    optional_slash("months/close", MonthCloseView.as_view(), name="billing-month-close"),
    *billing_router.urls,
]

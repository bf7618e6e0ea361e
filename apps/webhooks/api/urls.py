"""Routes of the webhooks app, included under /api/v1/ by bsn/urls.py."""

from apps.common.routers import OptionalSlashRouter
from apps.webhooks.api.views import DeliveryViewSet, WebhookViewSet

APP = r"apps/(?P<app_id>[0-9a-fA-F-]{36})"

router = OptionalSlashRouter()
router.register(f"{APP}/webhooks", WebhookViewSet, basename="webhook")
router.register(
    rf"{APP}/webhooks/(?P<webhook_id>[0-9a-fA-F-]{{36}})/deliveries", DeliveryViewSet, basename="webhook-delivery"
)

urlpatterns = router.urls

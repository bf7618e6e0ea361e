"""Webhooks in the console: tenants create and edit them (API); an operator can pause or
resume one and redeliver finished deliveries, through the same services (audited)."""

from django.contrib import admin

from apps.common.admin import ReadOnlyAdmin, run_each
from apps.webhooks import services
from apps.webhooks.models import Webhook, WebhookDelivery


@admin.register(Webhook)
class WebhookAdmin(ReadOnlyAdmin):
    list_display = ("id", "app", "url", "active", "created_at")
    list_filter = ("active",)
    list_select_related = ("app__tenant",)
    exclude = ("secret_encrypted",)
    actions = ["pause", "resume"]

    def _set_active(self, request, queryset, active: bool, done: str) -> None:
        def call(webhook: Webhook) -> None:
            services.webhook_update(webhook=webhook, actor=request.user, changes={"active": active}, request=request)

        run_each(self, request, queryset, call, done)

    @admin.action(description="Pause the selected webhooks (nothing is sent until resumed)")
    def pause(self, request, queryset):
        self._set_active(request, queryset, False, "{n} webhook(s) paused.")

    @admin.action(description="Resume the selected webhooks")
    def resume(self, request, queryset):
        self._set_active(request, queryset, True, "{n} webhook(s) resumed.")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("id", "webhook", "event_key", "status", "attempts", "response_code", "next_attempt_at")
    list_filter = ("status",)
    actions = ["redeliver"]

    @admin.action(description="Redeliver the selected finished deliveries")
    def redeliver(self, request, queryset):
        run_each(
            self,
            request,
            queryset,
            lambda d: services.delivery_redeliver(delivery=d, actor=request.user, request=request),
            "{n} delivery(ies) queued again.",
        )

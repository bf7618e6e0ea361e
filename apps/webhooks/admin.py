from django.contrib import admin

from apps.webhooks.models import Webhook, WebhookDelivery


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ("id", "app", "url", "active", "created_at")
    list_filter = ("active",)
    exclude = ("secret_encrypted",)
    readonly_fields = ("app", "url", "events", "active", "created_by")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "webhook", "event_key", "status", "attempts", "response_code", "next_attempt_at")
    list_filter = ("status",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]

from django.contrib import admin

from apps.events.models import EventCursor, EventFeed


@admin.register(EventFeed)
class EventFeedAdmin(admin.ModelAdmin):
    list_display = ("app", "node_height", "pumped_at", "last_error")
    readonly_fields = ("app", "node_height", "pumped_at", "last_error")


@admin.register(EventCursor)
class EventCursorAdmin(admin.ModelAdmin):
    list_display = ("app", "consumer", "height", "updated_at", "last_error")
    list_filter = ("consumer",)
    readonly_fields = ("app", "consumer", "height", "updated_at", "last_error")

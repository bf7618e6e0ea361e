"""Event feeds and cursors: positions the pump and the consumers keep; read-only."""

from django.contrib import admin

from apps.common.admin import ReadOnlyAdmin
from apps.events.models import EventCursor, EventFeed


@admin.register(EventFeed)
class EventFeedAdmin(ReadOnlyAdmin):
    list_display = ("app", "node_height", "pumped_at", "last_error")


@admin.register(EventCursor)
class EventCursorAdmin(ReadOnlyAdmin):
    list_display = ("app", "consumer", "height", "updated_at", "last_error")
    list_filter = ("consumer",)

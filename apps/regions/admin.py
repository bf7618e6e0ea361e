from django.contrib import admin

from apps.regions.models import Region


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "city", "country", "driver", "status", "max_nodes", "last_seen_at"]
    list_filter = ["status", "driver", "country"]
    search_fields = ["code", "name", "city"]
    actions = ["reconcile_now"]

    @admin.action(description="Reconcile the selected regions now")
    def reconcile_now(self, request, queryset):
        from apps.chainapps.tasks import region_reconcile_now

        queues = region_reconcile_now(queryset)
        self.message_user(request, f"A reconcile pass was queued on {', '.join(sorted(queues)) or 'no queue'}.")

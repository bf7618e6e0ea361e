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
        from apps.chainapps.admin import reconcile_regions_now

        reconcile_regions_now(self, request, queryset)

from django.contrib import admin

from apps.regions.models import Region


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "city", "country", "driver", "status", "max_nodes", "last_seen_at"]
    list_filter = ["status", "driver", "country"]
    search_fields = ["code", "name", "city"]

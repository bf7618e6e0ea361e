from django.contrib import admin

from apps.gateway.models import AppUser


@admin.register(AppUser)
class AppUserAdmin(admin.ModelAdmin):
    list_display = ["name", "app", "mode", "status", "created_at", "revoked_at", "exported_at"]
    list_filter = ["status", "mode"]
    search_fields = ["name", "app__name", "app__tenant__slug"]
    readonly_fields = [f.name for f in AppUser._meta.fields]

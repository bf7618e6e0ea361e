"""App users (participant identities of chain apps): registered and revoked by tenants
through the API, on the app's chain; read-only here (keys are the tenant's)."""

from django.contrib import admin

from apps.common.admin import ReadOnlyAdmin
from apps.gateway.models import AppUser


@admin.register(AppUser)
class AppUserAdmin(ReadOnlyAdmin):
    list_display = ["name", "app", "mode", "status", "created_at", "revoked_at", "exported_at"]
    list_filter = ["status", "mode"]
    list_select_related = ["app__tenant"]
    search_fields = ["name", "app__name", "app__tenant__slug"]

"""Operators see which master key wraps each tenant's data key and which users have custodied
keys; never a ciphertext (nothing in it helps an operator), let alone a key."""

from django.contrib import admin

from apps.custody.models import CustodyKey, TenantDataKey


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(TenantDataKey)
class TenantDataKeyAdmin(_ReadOnly):
    list_display = ["tenant", "master_key_id", "created_at", "rewrapped_at"]
    list_filter = ["master_key_id"]
    search_fields = ["tenant__slug"]
    fields = ["tenant", "master_key_id", "created_at", "rewrapped_at"]


@admin.register(CustodyKey)
class CustodyKeyAdmin(_ReadOnly):
    list_display = ["user", "data_key", "created_at", "destroyed_at"]
    search_fields = ["user__name", "user__app__name", "user__app__tenant__slug"]
    fields = ["user", "data_key", "created_at", "destroyed_at"]

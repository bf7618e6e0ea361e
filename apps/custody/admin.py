"""Operators see which master key wraps each tenant's data key and which users have custodied
keys; never a ciphertext (nothing in it helps an operator), let alone a key."""

from django.contrib import admin

from apps.common.admin import ReadOnlyAdmin
from apps.custody.models import CustodyKey, TenantDataKey


@admin.register(TenantDataKey)
class TenantDataKeyAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "master_key_id", "created_at", "rewrapped_at"]
    list_filter = ["master_key_id"]
    search_fields = ["tenant__slug"]
    fields = ["tenant", "master_key_id", "created_at", "rewrapped_at"]


@admin.register(CustodyKey)
class CustodyKeyAdmin(ReadOnlyAdmin):
    list_display = ["user", "data_key", "created_at", "destroyed_at"]
    search_fields = ["user__name", "user__app__name", "user__app__tenant__slug"]
    fields = ["user", "data_key", "created_at", "destroyed_at"]

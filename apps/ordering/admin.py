from django.contrib import admin

from apps.ordering.models import AppOrderingCredential, OrderingCluster, OrderingMember


@admin.register(OrderingCluster)
class OrderingClusterAdmin(admin.ModelAdmin):
    list_display = ("id", "state", "auth_enabled", "last_checked_at")
    exclude = ("root_password_encrypted",)  # never shown, not even encrypted
    readonly_fields = ("token", "auth_enabled", "state", "last_checked_at", "last_error")


@admin.register(OrderingMember)
class OrderingMemberAdmin(admin.ModelAdmin):
    list_display = ("index", "name", "region", "state", "endpoint", "last_seen_at")
    readonly_fields = ("name", "state", "endpoint", "runtime_id", "last_seen_at", "last_error")


@admin.register(AppOrderingCredential)
class AppOrderingCredentialAdmin(admin.ModelAdmin):
    list_display = ("app", "user", "prefix", "provisioned_at")
    exclude = ("password_encrypted",)
    readonly_fields = ("app", "user", "role", "prefix", "provisioned_at")

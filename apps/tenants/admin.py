from django.contrib import admin

from apps.tenants.models import ApiToken, Membership, Tenant


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "kind", "is_active", "max_apps", "max_nodes", "max_tps", "max_storage_mb"]
    list_filter = ["kind", "is_active"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "membership", "created_at", "expires_at", "revoked_at", "last_used_at"]
    readonly_fields = ["prefix", "digest", "membership", "created_at", "last_used_at"]
    list_filter = ["revoked_at"]

    def has_add_permission(self, request) -> bool:
        return False  # secrets are issued through the API or `manage.py bsn_token create`

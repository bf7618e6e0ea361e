from django.contrib import admin

from apps.tenants.models import ApiToken, Membership, Tenant
from apps.tenants.services import tenant_set_quota

QUOTA_FIELDS = ("max_apps", "max_nodes", "max_tps", "max_storage_mb", "max_daily_volume_mb")


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "kind",
        "is_active",
        "max_apps",
        "max_nodes",
        "max_tps",
        "max_storage_mb",
        "max_daily_volume_mb",
    ]
    list_filter = ["kind", "is_active"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]

    def save_model(self, request, obj, form, change):
        """Quota changes of an existing tenant go through ``tenant_set_quota`` (audited, with the values before)."""
        quotas = {f: form.cleaned_data[f] for f in QUOTA_FIELDS if change and f in form.changed_data}
        if quotas:
            current = Tenant.objects.filter(pk=obj.pk).values(*quotas).get()
            for name, value in current.items():
                setattr(obj, name, value)
        super().save_model(request, obj, form, change)
        if quotas:
            tenant_set_quota(tenant=obj, actor=request.user, request=request, **quotas)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "membership", "created_at", "expires_at", "revoked_at", "last_used_at"]
    readonly_fields = ["prefix", "digest", "membership", "created_at", "last_used_at"]
    list_filter = ["revoked_at"]

    def has_add_permission(self, request) -> bool:
        return False  # secrets are issued through the API or `manage.py bsn_token create`

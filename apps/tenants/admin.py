"""Tenants and API tokens in the operator console.

A tenant is created with ``tenant_create``, renamed with ``tenant_rename``, its quotas set
with ``tenant_set_quota`` (validated, audited with the values before) and (de)activated
with ``tenant_set_active``; its slug and kind are fixed once made. Members are managed by
the tenant's owners (API) and shown here read-only. Tokens are secrets issued through the
API or ``bsn_token``: the console lists and revokes them.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin

from apps.common.admin import REFUSALS, ReadOnlyAdmin, ReadOnlyInline, ServiceFormAdmin, run_each
from apps.tenants import services
from apps.tenants.models import ApiToken, Membership, Tenant

QUOTA_FIELDS = ("max_apps", "max_nodes", "max_tps", "max_storage_mb", "max_daily_volume_mb")


class MembershipInline(ReadOnlyInline):
    model = Membership
    fields = ["user", "role", "created_at"]
    readonly_fields = fields
    show_change_link = False


class TenantAddForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = ["slug", "name", "kind", *QUOTA_FIELDS]


@admin.register(Tenant)
class TenantAdmin(ServiceFormAdmin):
    list_display = ["slug", "name", "kind", "is_active", *QUOTA_FIELDS]
    list_filter = ["kind", "is_active"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]
    actions = ["activate", "deactivate"]

    def has_add_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("tenants.add_tenant")  # through tenant_create (save_model)

    def get_inline_instances(self, request, obj=None):
        return [] if obj is None else super().get_inline_instances(request, obj)  # a new tenant has no members

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = TenantAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return list(TenantAddForm.Meta.fields)
        return ["slug", "name", "kind", "is_active", *QUOTA_FIELDS, "created_at"]

    def get_readonly_fields(self, request, obj=None):
        # is_active changes through the actions (audited), not a checkbox.
        return [] if obj is None else ["slug", "kind", "is_active", "created_at"]

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            if not change:
                quotas = {name: data[name] for name in QUOTA_FIELDS}
                made = services.tenant_create(
                    slug=data["slug"], name=data["name"], kind=data["kind"], actor=request.user, **quotas
                )
                obj.pk = made.pk
                return
            current = Tenant.objects.get(pk=obj.pk)
            if "name" in form.changed_data:
                services.tenant_rename(tenant=current, name=data["name"], actor=request.user, request=request)
            quotas = {name: data[name] for name in QUOTA_FIELDS if name in form.changed_data}
            if quotas:
                services.tenant_set_quota(tenant=current, actor=request.user, request=request, **quotas)
        except REFUSALS as exc:
            self.refused(request, exc)

    @admin.action(description="Activate the selected tenants (tokens and logins work)")
    def activate(self, request, queryset):
        run_each(
            self,
            request,
            queryset,
            lambda t: services.tenant_set_active(tenant=t, active=True, actor=request.user, request=request),
            "{n} tenant(s) active.",
        )

    @admin.action(description="Deactivate the selected tenants (tokens and logins refused; apps keep running)")
    def deactivate(self, request, queryset):
        run_each(
            self,
            request,
            queryset,
            lambda t: services.tenant_set_active(tenant=t, active=False, actor=request.user, request=request),
            "{n} tenant(s) inactive.",
        )


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["name", "prefix", "membership", "created_at", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["revoked_at"]
    list_select_related = ["membership__tenant", "membership__user"]
    search_fields = ["name", "prefix", "membership__tenant__slug", "membership__user__username"]
    exclude = ["digest"]  # a hash of the secret: nothing an operator needs
    actions = ["revoke"]

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        run_each(
            self,
            request,
            queryset.filter(revoked_at__isnull=True).select_related("membership__tenant"),
            lambda t: services.token_revoke(token=t, actor=request.user, request=request),
            "{n} token(s) revoked.",
        )

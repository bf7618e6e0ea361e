from django.contrib import admin

from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation


@admin.register(Framework)
class FrameworkAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "version", "image", "port", "builtin", "is_active"]


class LedgerNodeInline(admin.TabularInline):
    model = LedgerNode
    extra = 0
    readonly_fields = ["name", "region", "state", "endpoint", "runtime_id", "last_seen_at", "public_key"]
    exclude = ["private_key_encrypted"]  # ciphertext only, but nothing to look at or edit
    can_delete = False


@admin.register(ChainApp)
class ChainAppAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "status", "desired_state", "created_at"]
    list_filter = ["status", "desired_state"]
    search_fields = ["name", "tenant__slug"]
    readonly_fields = ["status", "desired_state", "deleted_at", "ordering", "admin_public_key"]
    exclude = ["admin_private_key_encrypted"]
    inlines = [LedgerNodeInline]


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "status", "app", "attempts", "created_at", "finished_at"]
    list_filter = ["status", "kind"]
    readonly_fields = [f.name for f in Operation._meta.fields]

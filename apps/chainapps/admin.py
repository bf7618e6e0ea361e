from django.contrib import admin, messages

from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.regions.models import Region

# Actions only queue work for the region's worker: the web process never calls an engine.


@admin.register(Framework)
class FrameworkAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "version", "image", "port", "builtin", "is_active"]


NODE_HEALTH_FIELDS = [
    "name",
    "region",
    "framework",
    "generation",
    "state",
    "endpoint",
    "runtime_id",
    "last_seen_at",
    "chain_height",
    "chain_head",
    "chain_proposer",
    "chain_seen_at",
    "last_error",
    "public_key",
]


class LedgerNodeInline(admin.TabularInline):
    model = LedgerNode
    extra = 0
    fields = ["name", "region", "framework", "state", "chain_height", "last_seen_at", "last_error"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True


def reconcile_regions_now(modeladmin, request, regions) -> None:
    """Queue a reconcile pass on each region's worker and say where (the admin action of
    apps, nodes and regions)."""
    from apps.chainapps.tasks import region_reconcile_now

    queues = region_reconcile_now(regions)
    modeladmin.message_user(request, f"A reconcile pass was queued on {', '.join(sorted(queues)) or 'no queue'}.")


@admin.register(ChainApp)
class ChainAppAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "status", "status_reason", "desired_state", "created_at"]
    list_filter = ["status", "desired_state"]
    search_fields = ["name", "tenant__slug"]
    readonly_fields = ["status", "status_reason", "desired_state", "deleted_at", "ordering", "admin_public_key"]
    exclude = ["admin_private_key_encrypted"]
    inlines = [LedgerNodeInline]
    actions = ["reconcile_now"]

    @admin.action(description="Reconcile the regions of the selected apps now")
    def reconcile_now(self, request, queryset):
        reconcile_regions_now(self, request, Region.objects.filter(nodes__app__in=queryset).distinct())

    def save_model(self, request, obj, form, change):
        """Quota changes (tps_quota, storage_mb) go through ``chainapp_update``: within the
        tenant's limits, audited with the values before; a refusal is shown, the rest saved."""
        from rest_framework.exceptions import APIException

        from apps.chainapps.services import chainapp_update
        from apps.common.errors import DomainError

        quotas = {f: form.cleaned_data[f] for f in ("tps_quota", "storage_mb") if change and f in form.changed_data}
        if quotas:
            current = ChainApp.objects.filter(pk=obj.pk).values(*quotas).get()
            for name, value in current.items():
                setattr(obj, name, value)
        super().save_model(request, obj, form, change)
        if quotas:
            try:
                chainapp_update(app=obj, actor=request.user, data=quotas, request=request)
            except (APIException, DomainError) as exc:  # a refusal (quota, deleted app) is shown, not a 500
                detail = getattr(exc, "detail", exc)
                self.message_user(request, f"Quota not changed: {detail}", level=messages.ERROR)


@admin.register(LedgerNode)
class LedgerNodeAdmin(admin.ModelAdmin):
    """Node health as last observed (state, chain, errors); restart and reconcile-now."""

    list_display = [
        "name",
        "app",
        "region",
        "framework",
        "state",
        "chain_height",
        "chain_seen_at",
        "last_seen_at",
        "last_error",
    ]
    list_filter = ["state", "region", "framework"]
    search_fields = ["name", "app__name", "app__tenant__slug"]
    fields = NODE_HEALTH_FIELDS
    readonly_fields = NODE_HEALTH_FIELDS
    actions = ["restart", "reconcile_now"]

    def has_add_permission(self, request) -> bool:
        return False  # nodes are made by creating apps

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # and removed by deleting them

    @admin.action(description="Restart the selected nodes (stop, start, verify)")
    def restart(self, request, queryset):
        from apps.chainapps.tasks import node_restart

        nodes = list(queryset.exclude(state=LedgerNode.State.REMOVED).select_related("region"))
        for node in nodes:
            node_restart.apply_async((str(node.pk),), queue=node.region.queue, expires=300)
        skipped = queryset.count() - len(nodes)
        note = f" ({skipped} removed node(s) skipped)" if skipped else ""
        self.message_user(request, f"Restart of {len(nodes)} node(s) queued on their regions' workers{note}.")

    @admin.action(description="Reconcile the regions of the selected nodes now")
    def reconcile_now(self, request, queryset):
        reconcile_regions_now(self, request, Region.objects.filter(nodes__in=queryset).distinct())


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "status", "app", "attempts", "created_at", "finished_at"]
    list_filter = ["status", "kind"]
    readonly_fields = [f.name for f in Operation._meta.fields]
    actions = ["cancel"]

    @admin.action(description="Cancel the selected operations (not deletes)")
    def cancel(self, request, queryset):
        from apps.chainapps.provisioning import operation_cancel
        from apps.common.errors import Conflict

        done, refused = 0, []
        for op in queryset:
            try:
                operation_cancel(str(op.pk), by=request.user.get_username() or "platform staff")
                done += 1
            except Conflict as exc:
                refused.append(f"{op.pk}: {exc.detail}")
        self.message_user(request, f"{done} operation(s) cancelled.")
        if refused:
            self.message_user(request, "Not cancelled: " + "; ".join(refused), level=messages.WARNING)

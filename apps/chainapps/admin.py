"""Frameworks, chain apps, ledger nodes and operations in the operator console.

Every change calls the service the API and the management commands call (audited there);
actions only queue work for the regions' workers: the web process never calls an engine.
Apps, nodes and operations are made and removed by services, so the console adds and
deletes none of them directly (deleting an app starts its delete operation).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html

from apps.chainapps import services
from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.common.admin import REFUSALS, ReadOnlyAdmin, ReadOnlyInline, ServiceAdmin, ServiceFormAdmin, run_each
from apps.regions.models import Region

# --------------------------------------------------------------------------- frameworks


class FrameworkAddForm(forms.ModelForm):
    class Meta:
        model = Framework
        fields = list(services.FRAMEWORK_FIELDS)


@admin.register(Framework)
class FrameworkAdmin(ServiceAdmin):
    """Register a framework (``framework_register``); afterwards it is immutable (apps run
    it; a new version is a new framework), only offered or withdrawn (activate/deactivate)."""

    list_display = ["slug", "name", "version", "image", "port", "builtin", "is_active", "apps_count"]
    list_filter = ["is_active", "builtin"]
    actions = ["activate", "deactivate"]

    def has_add_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("chainapps.add_framework")

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = FrameworkAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return list(services.FRAMEWORK_FIELDS) + ([] if obj is None else ["builtin", "is_active", "apps_count"])

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.get_fields(request, obj)

    @admin.display(description="apps")
    def apps_count(self, obj: Framework) -> int:
        return obj.apps.filter(deleted_at__isnull=True).count()

    def save_model(self, request, obj, form, change):
        if change:  # nothing is editable on an existing framework (readonly_fields)
            return
        fields = {name: form.cleaned_data[name] for name in services.FRAMEWORK_FIELDS}
        saved = services.framework_register(actor=request.user, request=request, **fields)
        obj.pk = saved.pk

    @admin.action(description="Offer the selected frameworks to new apps (activate)")
    def activate(self, request, queryset):
        run_each(
            self,
            request,
            queryset,
            lambda f: services.framework_set_active(framework=f, active=True, actor=request.user, request=request),
            "{n} framework(s) active.",
        )

    @admin.action(description="Withdraw the selected frameworks from new apps (deactivate)")
    def deactivate(self, request, queryset):
        run_each(
            self,
            request,
            queryset,
            lambda f: services.framework_set_active(framework=f, active=False, actor=request.user, request=request),
            "{n} framework(s) inactive.",
        )


# --------------------------------------------------------------------------- nodes

NODE_HEALTH_FIELDS = [
    "name",
    "app",
    "region",
    "framework",
    "generation",
    "state",
    "health",
    "endpoint",
    "host_port",
    "runtime_id",
    "last_seen_at",
    "chain_height",
    "chain_head",
    "chain_proposer",
    "chain_seen_at",
    "last_error",
    "public_key",
]


def node_health(node: LedgerNode) -> str:
    """The node's health as last observed, in words."""
    if node.state == LedgerNode.State.RUNNING and not node.last_error:
        seen = node.last_seen_at
        return f"healthy (seen {int((timezone.now() - seen).total_seconds())} s ago)" if seen else "healthy"
    if node.state == LedgerNode.State.RUNNING:
        return f"running; {node.last_error}"
    return f"{node.state}" + (f": {node.last_error}" if node.last_error else "")


class LedgerNodeInline(ReadOnlyInline):
    model = LedgerNode
    fields = ["name", "region", "framework", "state", "chain_height", "last_seen_at", "last_error"]
    readonly_fields = fields


def reconcile_regions_now(modeladmin, request, regions) -> None:
    """Queue a reconcile pass on each region's worker and say where (the admin action of
    apps, nodes and regions; ``region_reconcile_request``, audited)."""
    queues = services.region_reconcile_request(regions=regions, actor=request.user, request=request)
    modeladmin.message_user(request, f"A reconcile pass was queued on {', '.join(sorted(queues)) or 'no queue'}.")


@admin.register(LedgerNode)
class LedgerNodeAdmin(ServiceAdmin):
    """Node health as last observed (state, chain, errors); restart and reconcile-now.
    Nodes are made by creating or scaling apps and removed by deleting or scaling them."""

    list_display = ["name", "app", "region", "state", "health", "chain_height", "chain_seen_at", "last_seen_at"]
    list_filter = ["state", "region", "framework"]
    list_select_related = ["app__tenant", "region"]
    search_fields = ["name", "app__name", "app__tenant__slug"]
    fields = NODE_HEALTH_FIELDS
    readonly_fields = NODE_HEALTH_FIELDS
    actions = ["restart", "reconcile_now"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # every field is observed or derived; actions are the only writes

    @admin.display(description="health")
    def health(self, obj: LedgerNode) -> str:
        text = node_health(obj)
        ok = obj.state == LedgerNode.State.RUNNING and not obj.last_error
        return format_html('<span style="color:{}">{}</span>', "#2e7d32" if ok else "#c62828", text)

    @admin.action(description="Restart the selected nodes (stop, start, verify)")
    def restart(self, request, queryset):
        nodes = queryset.select_related("region", "app__tenant")
        queued, skipped = services.node_restart_request(nodes=nodes, actor=request.user, request=request)
        note = f" ({len(skipped)} removed or not-running node(s) skipped)" if skipped else ""
        self.message_user(request, f"Restart of {len(queued)} node(s) queued on their regions' workers{note}.")

    @admin.action(description="Reconcile the regions of the selected nodes now")
    def reconcile_now(self, request, queryset):
        reconcile_regions_now(self, request, Region.objects.filter(nodes__in=queryset).distinct())


# --------------------------------------------------------------------------- apps

APP_EDITABLE = ("name", "description", "tps_quota", "storage_mb")


@admin.register(ChainApp)
class ChainAppAdmin(ServiceFormAdmin):
    """Start / stop / delete as actions (``chainapp_start|stop|delete``: an operation each);
    name, description and quotas through ``chainapp_update`` (within the tenant's limits)."""

    list_display = ["name", "tenant", "status", "status_reason", "desired_state", "ordering", "created_at"]
    list_filter = ["status", "desired_state", "ordering"]
    list_select_related = ["tenant"]
    search_fields = ["name", "tenant__slug"]
    fields = [
        "tenant",
        *APP_EDITABLE,
        "framework",
        "contract_template",
        "contract_params",
        "status",
        "status_reason",
        "desired_state",
        "version",
        "ordering",
        "admin_public_key",
        "created_at",
        "deleted_at",
    ]
    readonly_fields = [f for f in fields if f not in APP_EDITABLE]
    inlines = [LedgerNodeInline]
    actions = ["start", "stop", "delete_app", "reconcile_now"]

    def _lifecycle(self, request, queryset, service, verb: str) -> None:
        run_each(
            self,
            request,
            queryset.select_related("tenant"),
            lambda app: service(app=app, actor=request.user, request=request),
            f"{verb} of {{n}} app(s) started (an operation each; see Operations).",
        )

    @admin.action(description="Start the selected apps")
    def start(self, request, queryset):
        self._lifecycle(request, queryset, services.chainapp_start, "Start")

    @admin.action(description="Stop the selected apps")
    def stop(self, request, queryset):
        self._lifecycle(request, queryset, services.chainapp_stop, "Stop")

    @admin.action(description="Delete the selected apps (delete operation: containers removed, data kept)")
    def delete_app(self, request, queryset):
        self._lifecycle(request, queryset, services.chainapp_delete, "Delete")

    @admin.action(description="Reconcile the regions of the selected apps now")
    def reconcile_now(self, request, queryset):
        reconcile_regions_now(self, request, Region.objects.filter(nodes__app__in=queryset).distinct())

    def save_model(self, request, obj, form, change):
        """Only the changed editable fields, through ``chainapp_update``; a refusal (quota,
        duplicate name, deleted app) is shown and nothing is saved."""
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in APP_EDITABLE}
        current = ChainApp.objects.get(pk=obj.pk)
        try:
            services.chainapp_update(app=current, actor=request.user, data=changes, request=request)
        except REFUSALS as exc:
            self.refused(request, exc)


# --------------------------------------------------------------------------- operations


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    """Operations are jobs the services start; the console reads them and cancels open ones."""

    list_display = ["id", "kind", "status", "app", "attempts", "created_at", "finished_at"]
    list_filter = ["status", "kind"]
    list_select_related = ["app__tenant"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Operation._meta.fields]
    actions = ["cancel"]

    @admin.action(description="Cancel the selected operations (not deletes)")
    def cancel(self, request, queryset):
        from apps.common.errors import Conflict

        done, refused = 0, []
        for op in queryset.select_related("tenant"):
            try:
                services.operation_cancel(operation=op, actor=request.user, request=request)
                done += 1
            except Conflict as exc:
                refused.append(f"{op.pk}: {exc.detail}")
        self.message_user(request, f"{done} operation(s) cancelled.")
        if refused:
            self.message_user(request, "Not cancelled: " + "; ".join(refused), level=messages.WARNING)

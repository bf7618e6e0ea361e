"""Regions in the console: engine health and a capacity bar in the list; drain / enable /
reconcile-now as actions; description and capacity edited through ``region_update``.

Regions are registered with ``bsn_region add`` (TLS material is checked, then stored
encrypted), so the console adds none; a region is never deleted here (its nodes would be
left running)."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html

from apps.chainapps.selectors import regions_with_load
from apps.common.admin import ServiceFormAdmin, bar, run_each
from apps.regions.models import Region
from apps.regions.services import REGION_EDITABLE, RegionInvalid, region_set_status, region_update


def engine_health(region: Region) -> str:
    """What the workers last saw of the engine, in words (no engine is called from the web)."""
    if region.status == Region.Status.UNAVAILABLE:
        return f"unavailable: {region.last_error or 'no answer'}"
    if region.last_seen_at is None:
        return "not seen yet"
    age = int((timezone.now() - region.last_seen_at).total_seconds())
    return f"answering (seen {age} s ago)" if not region.last_error else f"answering; last error: {region.last_error}"


@admin.register(Region)
class RegionAdmin(ServiceFormAdmin):
    list_display = ["code", "name", "driver", "status", "engine", "capacity", "last_seen_at"]
    list_filter = ["status", "driver", "country"]
    search_fields = ["code", "name", "city"]
    actions = ["drain", "enable", "reconcile_now"]
    fields = [
        "code",
        *REGION_EDITABLE,
        "driver",
        "docker_base_url",
        "engine_tls",
        "publish_host",
        "publish_mode",
        "overlay_encryption",
        "status",
        "last_seen_at",
        "last_error",
        "last_event",
        "last_event_at",
    ]
    # TLS material is set with `bsn_region add --tls-*`; the console shows whom the client
    # certificate names, never the PEM texts. Where the engine is stays as registered.
    readonly_fields = [f for f in fields if f not in REGION_EDITABLE]

    def get_queryset(self, request):
        # node_count: live nodes, the figure placement checks against max_nodes.
        return regions_with_load()

    @admin.display(description="engine")
    def engine(self, obj: Region) -> str:
        text = engine_health(obj)
        colour = "#c62828" if obj.status == Region.Status.UNAVAILABLE or obj.last_error else "#2e7d32"
        return format_html('<span style="color:{}">{}</span>', colour, text)

    @admin.display(description="capacity (nodes used / max)")
    def capacity(self, obj: Region) -> str:
        return bar(getattr(obj, "node_count", 0), obj.max_nodes)

    @admin.display(description="engine TLS")
    def engine_tls(self, obj: Region) -> str:
        try:
            tls = obj.tls()
        except ValueError as exc:
            return f"unreadable: {exc}"
        return tls.describe() if tls else "none (local socket or ssh)"

    def save_model(self, request, obj, form, change):
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in REGION_EDITABLE}
        try:  # the form ran the model's validators; what is left is a race, shown, never a 500
            region_update(region=obj, actor=request.user, request=request, **changes)
        except RegionInvalid as exc:
            self.refused(request, exc)

    def _set_status(self, request, queryset, status: str, done: str) -> None:
        def call(region: Region) -> None:
            region_set_status(code=region.code, status=status, actor=request.user, request=request)

        run_each(self, request, queryset, call, done)

    @admin.action(description="Drain the selected regions (no new nodes; running nodes stay)")
    def drain(self, request, queryset):
        self._set_status(request, queryset, Region.Status.DRAINING, "{n} region(s) draining.")

    @admin.action(description="Enable the selected regions (accept new nodes)")
    def enable(self, request, queryset):
        self._set_status(request, queryset, Region.Status.ACTIVE, "{n} region(s) active.")

    @admin.action(description="Reconcile the selected regions now")
    def reconcile_now(self, request, queryset):
        from apps.chainapps.admin import reconcile_regions_now

        reconcile_regions_now(self, request, queryset)

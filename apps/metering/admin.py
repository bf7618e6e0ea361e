from django.contrib import admin

from apps.common.admin import ReadOnlyAdmin
from apps.metering.models import NodeMeter, UsageHour


@admin.register(UsageHour)
class UsageHourAdmin(ReadOnlyAdmin):
    """Metered usage, read-only: rows are written by the flush and the scrape only."""

    list_display = [
        "hour",
        "app",
        "region",
        "tx_committed",
        "tx_failed",
        "tx_rejected",
        "bytes_in",
        "bytes_out",
        "node_seconds",
        "storage_bytes",
    ]
    list_filter = ["region"]
    search_fields = ["app__name", "app__tenant__slug"]
    date_hierarchy = "hour"
    list_select_related = ["app__tenant", "region"]


@admin.register(NodeMeter)
class NodeMeterAdmin(UsageHourAdmin):
    """What the scrape last saw of each node."""

    list_display = ["node", "observed_at", "running", "storage_bytes", "storage_read_at", "last_error"]
    list_filter = ["running"]
    search_fields = ["node__name", "node__app__name"]
    date_hierarchy = None
    list_select_related = ["node"]

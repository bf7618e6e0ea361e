"""Usage per app, region and hour: the one aggregated row the gateway counters and node metrics feed.

Not a row per transaction: counters are added to the row of their hour (``F()`` updates,
so concurrent flushes from several processes add up), storage is the last reading.
Billing reads these rows; the usage API sums them over a range.
"""

from __future__ import annotations

from django.db import models

from apps.chainapps.models import ChainApp
from apps.regions.models import Region


class UsageHour(models.Model):
    app = models.ForeignKey(ChainApp, on_delete=models.CASCADE, related_name="usage_hours")
    region = models.ForeignKey(
        Region,
        on_delete=models.PROTECT,
        related_name="usage_hours",
        help_text="where the work ran: the node that served the gateway request, the node that stores the bytes",
    )
    hour = models.DateTimeField(help_text="start of the hour, UTC")
    tx_committed = models.BigIntegerField(default=0)
    tx_failed = models.BigIntegerField(default=0)
    tx_rejected = models.BigIntegerField(default=0)
    bytes_in = models.BigIntegerField(default=0, help_text="request bytes received at the gateway")
    bytes_out = models.BigIntegerField(default=0, help_text="response bytes sent by the gateway")
    storage_bytes = models.BigIntegerField(
        default=0, help_text="largest bsn_storage_bytes of the app's nodes in the region, last reading"
    )
    node_seconds = models.BigIntegerField(default=0, help_text="seconds of running ledger nodes within the hour")

    class Meta:
        ordering = ["app", "hour"]
        constraints = [
            models.UniqueConstraint(fields=["app", "region", "hour"], name="usagehour_unique_app_region_hour"),
        ]
        indexes = [models.Index(fields=["hour"])]

    def __str__(self) -> str:
        return f"{self.app_id}/{self.region_id}@{self.hour:%Y-%m-%dT%H}"

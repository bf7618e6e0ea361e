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


class NodeMeter(models.Model):
    """What the metering scrape last saw of one ledger node: when, whether it ran, its storage."""

    node = models.OneToOneField("chainapps.LedgerNode", on_delete=models.CASCADE, related_name="meter")
    observed_at = models.DateTimeField(help_text="the last scrape pass that looked at the node")
    running = models.BooleanField(default=False, help_text="the node's state was running at that pass")
    storage_bytes = models.BigIntegerField(null=True, blank=True, help_text="bsn_storage_bytes, last reading")
    storage_read_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"meter of {self.node_id}"


class CounterFlush(models.Model):
    """One batch of gateway counters applied to UsageHour: its Redis key, claimed once.

    Inserted in the same transaction as the additions, so a batch whose worker died after
    the commit (before deleting the key) is recognised and never added twice.
    """

    key = models.CharField(max_length=200, unique=True)
    applied_at = models.DateTimeField(auto_now_add=True, db_index=True)
    fields = models.PositiveIntegerField(default=0, help_text="hash fields in the batch")

    def __str__(self) -> str:
        return self.key

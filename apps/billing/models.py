"""Billing in digital currency: region price lists, monthly invoices, payment from the
tenant's corporate DCEP wallet, and suspension of an overdue tenant's apps.

Money is an integer number of fen. See docs/billing.md.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.chainapps.models import ChainApp
from apps.common.models import TimeStamped
from apps.dcep.models import Account
from apps.regions.models import Region
from apps.tenants.models import Tenant


class PriceList(models.Model):
    """One region's prices (fen) and its operator's revenue share, in force from ``valid_from``.

    Rows are never changed: a price change is a new row with a later ``valid_from``, so an
    invoice of any month can always be recomputed from the prices it was billed with.
    """

    id = models.BigAutoField(primary_key=True)
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="price_lists")
    valid_from = models.DateTimeField(help_text="start of an hour, UTC: usage from this hour on is billed at these")
    node_hour_fen = models.PositiveBigIntegerField(help_text="per hour of one running ledger node")
    per_1000_tx_fen = models.PositiveBigIntegerField(help_text="per 1,000 committed transactions")
    gb_month_fen = models.PositiveBigIntegerField(help_text="per GB (10^9 bytes) stored for a whole month")
    operator_share_bp = models.PositiveIntegerField(
        help_text="the region operator's revenue share in basis points (1/100 of a percent, 0-10000)"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["region__code", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["region", "valid_from"], name="billing_one_price_per_start"),
            models.CheckConstraint(condition=Q(operator_share_bp__lte=10_000), name="billing_share_at_most_all"),
        ]

    def __str__(self) -> str:
        return f"{self.region_id} from {self.valid_from:%Y-%m-%d %H:%M}"


class BillingAccount(TimeStamped):
    """Which corporate DCEP wallet pays a tenant's invoices (a wallet the tenant holds)."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="billing_account")
    wallet = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")

    def __str__(self) -> str:
        return f"{self.tenant.slug} pays from {self.wallet.number}"


class Invoice(TimeStamped):
    """One tenant's invoice for one calendar month (UTC). Its amounts and lines never change once issued."""

    class Status(models.TextChoices):
        ISSUED = "issued"  # not paid yet
        PAID = "paid"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="invoices")
    month = models.DateField(help_text="first day of the billed month")
    number = models.CharField(max_length=100, unique=True)
    currency = models.CharField(max_length=3, default="CNY")
    total_fen = models.BigIntegerField()
    operator_share_fen = models.BigIntegerField(default=0)
    issued_at = models.DateTimeField()
    due_at = models.DateTimeField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ISSUED, db_index=True)
    # Payment state (the invoice's amounts above never change).
    paid_at = models.DateTimeField(null=True, blank=True)
    transfer_id = models.UUIDField(null=True, blank=True, help_text="the DCEP payment transfer")
    payer_wallet = models.CharField(max_length=16, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error_code = models.CharField(max_length=64, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    log = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-month", "tenant__slug"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "month"], name="billing_one_invoice_per_month"),
            models.CheckConstraint(condition=Q(total_fen__gte=0), name="billing_invoice_not_negative"),
        ]
        indexes = [models.Index(fields=["status", "due_at"])]

    def __str__(self) -> str:
        return f"{self.number} ({self.status})"

    @property
    def payment_key(self) -> str:
        """The idempotency key of this invoice's one payment."""
        return f"bsn-invoice:{self.pk}"


class InvoiceLine(models.Model):
    """One priced quantity of one app in one region under one price list."""

    class Kind(models.TextChoices):
        NODE_HOURS = "node_hours"
        TRANSACTIONS = "transactions"
        STORAGE = "storage"

    id = models.BigAutoField(primary_key=True)
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    app = models.ForeignKey(ChainApp, null=True, on_delete=models.SET_NULL, related_name="+")
    app_name = models.CharField(max_length=63)
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="+")
    region_operator = models.CharField(max_length=200, blank=True)
    price_list = models.ForeignKey(PriceList, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Exact quantity in the line's unit (node-hours, thousands of transactions, GB-months).
    quantity = models.DecimalField(max_digits=30, decimal_places=9)
    unit_price_fen = models.PositiveBigIntegerField()
    amount_fen = models.BigIntegerField()
    operator_share_bp = models.PositiveIntegerField()
    operator_share_fen = models.BigIntegerField()
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.app_name}/{self.region_id} {self.kind} {self.amount_fen}"


class Suspension(TimeStamped):
    """A tenant's apps stopped because an invoice stayed unpaid past its grace period."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="billing_suspensions")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="suspensions")
    reason = models.CharField(max_length=300)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"], condition=Q(ended_at__isnull=True), name="billing_one_open_suspension"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug} suspended {self.started_at:%Y-%m-%d}"


class SuspendedApp(TimeStamped):
    """An app a suspension stopped (only these are started again on payment)."""

    id = models.BigAutoField(primary_key=True)
    suspension = models.ForeignKey(Suspension, on_delete=models.CASCADE, related_name="apps")
    app = models.ForeignKey(ChainApp, on_delete=models.CASCADE, related_name="billing_suspensions")
    stop_operation = models.UUIDField(null=True, blank=True)
    resume_operation = models.UUIDField(null=True, blank=True)
    resumed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["suspension", "app"], name="billing_suspended_once")]

    def __str__(self) -> str:
        return f"{self.app_id} in {self.suspension_id}"

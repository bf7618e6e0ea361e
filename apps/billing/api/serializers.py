"""Billing API bodies: prices (staff input, everyone's output), invoices and their lines."""

from __future__ import annotations

import datetime as dt

from rest_framework import serializers

from apps.billing.models import Invoice, InvoiceLine, PriceList
from apps.common.serializers import StrictInputSerializer

FEN = {"min_value": 0, "max_value": 10**15}


class PriceListSerializer(serializers.ModelSerializer):
    region = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = PriceList
        fields = [
            "id",
            "region",
            "valid_from",
            "node_hour_fen",
            "per_1000_tx_fen",
            "gb_month_fen",
            "operator_share_bp",
            "created_at",
        ]


class PriceSetInput(StrictInputSerializer):
    region = serializers.CharField(max_length=32)
    valid_from = serializers.DateTimeField(help_text="ISO 8601 with a zone, the start of an hour (UTC)")

    def validate_valid_from(self, value: dt.datetime) -> dt.datetime:
        # Years 1 and 9999 with an offset overflow on conversion to UTC: no price is set there.
        if not 2000 <= value.year <= 2999:
            raise serializers.ValidationError("a time between the years 2000 and 2999")
        return value

    # Strict integers: a float or a numeric string is not an amount of money (as in DCEP).
    node_hour_fen = serializers.IntegerField(**FEN)
    per_1000_tx_fen = serializers.IntegerField(**FEN)
    gb_month_fen = serializers.IntegerField(**FEN)
    operator_share_bp = serializers.IntegerField(min_value=0, max_value=10_000, help_text="basis points, 0-10000")

    def to_internal_value(self, data):
        if isinstance(data, dict):
            wrong = {
                name: "an integer number (fen or basis points), not a string, float or boolean"
                for name in ("node_hour_fen", "per_1000_tx_fen", "gb_month_fen", "operator_share_bp")
                if name in data and (type(data[name]) is not int)
            }
            if wrong:
                raise serializers.ValidationError(wrong)
        return super().to_internal_value(data)


class MonthCloseInput(StrictInputSerializer):
    month = serializers.RegexField(r"^(20\d\d|2[1-9]\d\d)-(0[1-9]|1[0-2])$", help_text="YYYY-MM (2000-2999)")

    def validate_month(self, value: str) -> dt.date:
        year, month = value.split("-")
        return dt.date(int(year), int(month), 1)


class InvoiceLineSerializer(serializers.ModelSerializer):
    app = serializers.UUIDField(source="app_id", read_only=True, allow_null=True)
    region = serializers.SlugRelatedField(slug_field="code", read_only=True)
    quantity = serializers.DecimalField(max_digits=30, decimal_places=9, read_only=True, coerce_to_string=True)

    class Meta:
        model = InvoiceLine
        fields = [
            "app",
            "app_name",
            "region",
            "region_operator",
            "kind",
            "quantity",
            "unit_price_fen",
            "amount_fen",
            "period_start",
            "period_end",
        ]


class InvoiceSerializer(serializers.ModelSerializer):
    month = serializers.SerializerMethodField()
    html = serializers.SerializerMethodField(help_text="the printable invoice")

    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "month",
            "currency",
            "total_fen",
            "status",
            "issued_at",
            "due_at",
            "paid_at",
            "transfer_id",
            "payer_wallet",
            "attempts",
            "last_error_code",
            "last_error",
            "next_attempt_at",
            "html",
        ]

    def get_month(self, invoice) -> str:
        return f"{invoice.month:%Y-%m}"

    def get_html(self, invoice) -> str:
        return f"/api/v1/tenant/invoices/{invoice.pk}/html"


class InvoiceDetailSerializer(InvoiceSerializer):
    lines = InvoiceLineSerializer(many=True, read_only=True)

    class Meta(InvoiceSerializer.Meta):
        fields = [*InvoiceSerializer.Meta.fields, "lines"]


class BillingWalletInput(StrictInputSerializer):
    wallet = serializers.RegexField(r"^\d{16}$", help_text="a corporate DCEP wallet your tenant holds (16 digits)")

    def to_internal_value(self, data):
        # A wallet number is a string: a JSON number would lose leading zeros (and DRF would accept it).
        if isinstance(data, dict) and "wallet" in data and not isinstance(data["wallet"], str):
            raise serializers.ValidationError({"wallet": "a string of 16 digits"})
        return super().to_internal_value(data)


class BillingStatusSerializer(serializers.Serializer):
    wallet = serializers.CharField(allow_null=True, help_text="the wallet invoices are paid from, null if none")
    wallet_chosen = serializers.BooleanField(help_text="set by the tenant or staff (else: the only corporate wallet)")
    unpaid = serializers.IntegerField(help_text="invoices not paid yet")
    unpaid_fen = serializers.IntegerField()
    next_due_at = serializers.DateTimeField(allow_null=True)
    suspended = serializers.DictField(
        allow_null=True, help_text="{reason, since} while apps are stopped for non-payment"
    )

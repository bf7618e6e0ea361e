from django.conf import settings
from rest_framework import serializers

from apps.common.serializers import StrictInputSerializer
from apps.metering.selectors import STEPS, Range, usage_range

LONGEST_TENANT_RANGE_DAYS = 366


class UsageQuerySerializer(StrictInputSerializer):
    """``from``/``to`` (ISO 8601; without an offset: UTC), ``step`` hour|day."""

    def get_fields(self):
        # "from" is a Python keyword: the fields are declared by name here.
        return {
            "from": serializers.DateTimeField(
                required=False, help_text="start, ISO 8601 (UTC when no offset); rounded down to the step"
            ),
            "to": serializers.DateTimeField(
                required=False, help_text="end (exclusive), ISO 8601; rounded up to the step; default now"
            ),
            "step": serializers.ChoiceField(choices=list(STEPS), required=False, default="hour"),
        }

    def validate(self, attrs) -> Range:
        start, end, step = attrs.get("from"), attrs.get("to"), attrs["step"]
        if start is not None and end is not None and start >= end:
            raise serializers.ValidationError({"from": "must be before to"})
        rng = usage_range(start=start, end=end, step=step)
        if start is not None and end is None and rng.end <= rng.start:
            raise serializers.ValidationError({"from": "is in the future"})
        most = settings.BSN_USAGE_MAX_BUCKETS
        if self.context.get("per_bucket", True) and rng.buckets > most:
            raise serializers.ValidationError(
                {"from": f"the range holds {rng.buckets} {step}s; at most {most} per answer: narrow it or use step=day"}
            )
        if (rng.end - rng.start).days > LONGEST_TENANT_RANGE_DAYS:
            raise serializers.ValidationError({"from": f"a range is at most {LONGEST_TENANT_RANGE_DAYS} days"})
        return rng


class UsageValuesSerializer(serializers.Serializer):
    tx_committed = serializers.IntegerField()
    tx_failed = serializers.IntegerField()
    tx_rejected = serializers.IntegerField(help_text="refused by the node (a 400 with its reason)")
    bytes_in = serializers.IntegerField(help_text="request body bytes received at the gateway")
    bytes_out = serializers.IntegerField(help_text="response body bytes sent by the gateway")
    node_seconds = serializers.IntegerField(help_text="seconds of running ledger nodes, all regions")
    storage_bytes = serializers.IntegerField(help_text="the largest hourly total over the regions")


class UsageBucketSerializer(UsageValuesSerializer):
    start = serializers.DateTimeField()


class _RangeOutput(serializers.Serializer):
    def get_fields(self):
        fields = super().get_fields()
        return {
            "from": serializers.DateTimeField(help_text="start of the first bucket (inclusive)"),
            "to": serializers.DateTimeField(help_text="end of the last bucket (exclusive)"),
            "step": serializers.CharField(),
            **fields,
        }


class AppUsageSerializer(_RangeOutput):
    app = serializers.UUIDField()
    buckets = UsageBucketSerializer(many=True)
    totals = UsageValuesSerializer()


class AppUsageRowSerializer(UsageValuesSerializer):
    app = serializers.UUIDField()
    name = serializers.CharField()
    deleted = serializers.BooleanField()


class TenantUsageSerializer(_RangeOutput):
    apps = AppUsageRowSerializer(many=True)
    totals = UsageValuesSerializer()

from rest_framework import serializers
from rest_framework.reverse import reverse

from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.common.incidents import sees_detail
from apps.common.serializers import StrictInputSerializer
from bsn.ledger.contracts import CONTRACTS


class FrameworkSerializer(serializers.ModelSerializer):
    contract_templates = serializers.ListField(
        child=serializers.CharField(), source="offered_templates", read_only=True
    )

    class Meta:
        model = Framework
        fields = [
            "slug",
            "name",
            "version",
            "image",
            "port",
            "health_path",
            "default_cpus",
            "default_memory_mb",
            "contract_templates",
            "builtin",
        ]


class NodeSerializer(serializers.ModelSerializer):
    """A node as its tenant sees it. No endpoint: tenants reach their ledger through the
    gateway; where a node listens is operator information (``StaffNodeSerializer``)."""

    region = serializers.SlugRelatedField(slug_field="code", read_only=True)
    framework = serializers.SerializerMethodField(help_text="slug of the framework this node runs")
    framework_version = serializers.SerializerMethodField()

    class Meta:
        model = LedgerNode
        fields = [
            "id",
            "name",
            "region",
            "framework",
            "framework_version",
            "state",
            "generation",
            "public_key",
            "chain_height",
            "chain_head",
            "chain_proposer",
            "chain_seen_at",
            "last_seen_at",
            "last_error",
            "created_at",
        ]

    def get_framework(self, node) -> str:
        return node.current_framework.slug

    def get_framework_version(self, node) -> str:
        return node.current_framework.version


class StaffNodeSerializer(NodeSerializer):
    """A node as platform staff see it: with its published endpoint."""

    class Meta(NodeSerializer.Meta):
        fields = [*NodeSerializer.Meta.fields, "endpoint"]


class AppOutputSerializer(serializers.ModelSerializer):
    framework = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    regions = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    suspended = serializers.SerializerMethodField(
        help_text="why the platform stopped this app for non-payment and since when; null otherwise"
    )
    tps_in_use = serializers.SerializerMethodField(
        help_text="transactions admitted within about the last second, of tps_quota (the app's detail only; "
        "null in lists or when the quota service does not answer)"
    )
    storage_in_use_bytes = serializers.SerializerMethodField(
        help_text="bytes stored, of storage_mb: the largest node's bsn_storage_bytes as last scraped (the app's "
        "detail only; null in lists or before the first reading)"
    )

    class Meta:
        model = ChainApp
        fields = [
            "id",
            "url",
            "name",
            "description",
            "framework",
            "contract_template",
            "contract_params",
            "ordering",
            "admin_public_key",
            "regions",
            "tps_quota",
            "tps_in_use",
            "storage_mb",
            "storage_in_use_bytes",
            "desired_state",
            "status",
            "status_reason",
            "suspended",
            "version",
            "created_at",
            "updated_at",
        ]

    def get_suspended(self, app) -> dict | None:
        """``{"reason", "since"}`` while billing keeps the app stopped for an unpaid invoice (docs/billing.md)."""
        for record in app.billing_suspensions.all():
            open_ = record.suspension.ended_at is None and record.resumed_at is None
            if open_ and record.stop_operation is not None:
                return {"reason": record.suspension.reason, "since": record.suspension.started_at.isoformat()}
        return None

    def get_tps_in_use(self, app) -> int | None:
        return (self.context.get("tps_in_use") or {}).get(str(app.pk))

    def get_storage_in_use_bytes(self, app) -> int | None:
        return (self.context.get("storage_in_use") or {}).get(str(app.pk))

    def get_regions(self, app) -> list[str]:
        """Where the app runs: nodes scaled away are no longer listed (a deleted app's are)."""
        removed = LedgerNode.State.REMOVED
        return [node.region.code for node in app.nodes.all() if app.deleted_at or node.state != removed]

    def get_url(self, app) -> str:
        return reverse("app-detail", args=[app.pk], request=self.context.get("request"))


class AppCreateInputSerializer(StrictInputSerializer):
    name = serializers.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", error_messages={"invalid": "1–63 letters, digits, '.', '_' or '-'"}
    )
    description = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    framework = serializers.SlugField(required=False, default="bsn-ledger")
    contract_template = serializers.ChoiceField(choices=list(CONTRACTS), required=False, default="kv")
    contract_params = serializers.DictField(required=False, default=dict)
    regions = serializers.ListField(child=serializers.CharField(max_length=32), min_length=1, max_length=16)
    tps_quota = serializers.IntegerField(min_value=1, max_value=100_000, required=False, default=10)
    storage_mb = serializers.IntegerField(min_value=1, max_value=10_000_000, required=False, default=1024)


class AppUpdateInputSerializer(StrictInputSerializer):
    name = serializers.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        required=False,
        error_messages={"invalid": "1–63 letters, digits, '.', '_' or '-'"},
    )
    description = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    tps_quota = serializers.IntegerField(
        min_value=1, max_value=100_000, required=False, help_text="platform staff only (403 staff-only otherwise)"
    )
    storage_mb = serializers.IntegerField(
        min_value=1,
        max_value=10_000_000,
        required=False,
        help_text="the app's storage quota; platform staff only (403 staff-only otherwise)",
    )

    not_here = {
        "framework": "change the framework with POST /api/v1/apps/{id}/upgrade",
        "regions": "change the regions with POST /api/v1/apps/{id}/scale",
        "status": "derived from the nodes: use POST /api/v1/apps/{id}/start or /stop",
        "ordering": "chosen at creation from the regions; it cannot be changed",
    }


class AppUpgradeInputSerializer(StrictInputSerializer):
    framework = serializers.CharField(
        max_length=140, help_text="the framework to move to: its slug, or name:version (same family as the app's)"
    )


class AppScaleInputSerializer(StrictInputSerializer):
    regions = serializers.ListField(
        child=serializers.CharField(max_length=32),
        min_length=1,
        max_length=16,
        help_text="the full set of regions the app is to run in",
    )
    keep_data = serializers.BooleanField(
        required=False, default=True, help_text="keep the data volumes of nodes on dropped regions"
    )


class OperationSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Operation
        fields = [
            "id",
            "url",
            "kind",
            "status",
            "app",
            "params",
            "attempts",
            "max_attempts",
            "last_error",
            "steps",
            "log",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
        ]

    def get_url(self, op) -> str:
        return reverse("operation-detail", args=[op.pk], request=self.context.get("request"))

    def to_representation(self, op):
        data = super().to_representation(op)
        if not sees_detail(self.context.get("request")):  # internal detail is for platform staff
            data["log"] = [{k: v for k, v in entry.items() if k != "detail"} for entry in data["log"] or []]
        return data

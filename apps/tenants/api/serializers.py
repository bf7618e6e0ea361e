from django.conf import settings
from rest_framework import serializers

from apps.common.serializers import StrictInputSerializer
from apps.tenants.models import ApiToken, Membership, Role, Tenant


class LoginInputSerializer(StrictInputSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=512, trim_whitespace=False)
    tenant = serializers.SlugField(required=False, help_text="tenant slug, if you belong to several")


class TokenOutputSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="membership.user.username", read_only=True)
    is_usable = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "prefix",
            "username",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "is_usable",
        ]


class IssuedTokenSerializer(TokenOutputSerializer):
    token = serializers.CharField(read_only=True, help_text="the secret; shown only in this response")

    class Meta(TokenOutputSerializer.Meta):
        fields = [*TokenOutputSerializer.Meta.fields, "token"]


class TokenCreateInputSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=100)
    expires_in_days = serializers.IntegerField(min_value=1, max_value=settings.BSN_TOKEN_MAX_TTL_DAYS, required=False)


class UsageSerializer(serializers.Serializer):
    apps = serializers.IntegerField()
    nodes = serializers.IntegerField()
    tps = serializers.IntegerField(help_text="the apps' tps_quota added up (what max_tps limits at creation)")
    tps_in_use = serializers.IntegerField(
        allow_null=True, help_text="transactions the tenant's bucket admitted within about the last second"
    )
    storage_mb = serializers.IntegerField(help_text="the apps' storage_mb added up (what max_storage_mb limits)")
    storage_in_use_bytes = serializers.IntegerField(
        allow_null=True, help_text="bytes the live apps' nodes store (each app's largest node, last reading)"
    )
    volume_today_bytes = serializers.IntegerField(
        allow_null=True, help_text="request bytes the gateway accepted today (UTC), of max_daily_volume_mb"
    )


class QuotaSerializer(serializers.Serializer):
    max_apps = serializers.IntegerField()
    max_nodes = serializers.IntegerField()
    max_tps = serializers.IntegerField()
    max_storage_mb = serializers.IntegerField()
    max_daily_volume_mb = serializers.IntegerField(help_text="request bytes per UTC day through the gateway, MiB")


class TenantQuotaInputSerializer(StrictInputSerializer):
    """Quotas of the caller's tenant; platform staff only (403 staff-only otherwise)."""

    max_apps = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)
    max_nodes = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)
    max_tps = serializers.IntegerField(min_value=0, max_value=10_000_000, required=False)
    max_storage_mb = serializers.IntegerField(min_value=0, max_value=2_000_000_000, required=False)
    max_daily_volume_mb = serializers.IntegerField(min_value=0, max_value=2_000_000_000, required=False)

    not_here = {
        "name": "the tenant's name and slug are set with manage.py bsn_tenant or the admin",
        "slug": "the tenant's name and slug are set with manage.py bsn_tenant or the admin",
        "kind": "a tenant's kind cannot be changed",
    }


class TenantOutputSerializer(serializers.ModelSerializer):
    quotas = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()
    role = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = ["id", "slug", "name", "kind", "role", "quotas", "usage", "created_at"]

    def get_quotas(self, tenant) -> QuotaSerializer:
        return QuotaSerializer(tenant).data

    def get_usage(self, tenant) -> UsageSerializer:
        return self.context["usage"]

    def get_role(self, tenant) -> str:
        return self.context["role"]


class MemberOutputSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    email = serializers.CharField(source="user.email", help_text="an email address, or empty when none was given")

    class Meta:
        model = Membership
        fields = ["id", "username", "email", "role", "created_at"]


class MemberCreateInputSerializer(StrictInputSerializer):
    # ASCII only; the account is created as "<username>@<tenant slug>" (its login name).
    username = serializers.RegexField(
        r"^[a-z0-9][a-z0-9._-]{0,79}\Z",
        help_text="lower-case ASCII letters, digits, '.', '_', '-'; the login name is <username>@<tenant slug>",
    )
    email = serializers.EmailField(required=False, allow_blank=True)
    role = serializers.ChoiceField(choices=Role.choices)
    password = serializers.CharField(max_length=512, trim_whitespace=False, help_text="the new account's password")


class MemberUpdateInputSerializer(StrictInputSerializer):
    role = serializers.ChoiceField(choices=Role.choices)

import django_filters

from apps.tenants.models import ApiToken


class TokenFilter(django_filters.FilterSet):
    username = django_filters.CharFilter(field_name="membership__user__username")
    revoked = django_filters.BooleanFilter(field_name="revoked_at", lookup_expr="isnull", exclude=True)

    class Meta:
        model = ApiToken
        fields = ["name", "username", "revoked"]

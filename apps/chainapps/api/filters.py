import django_filters

from apps.chainapps.models import ChainApp, Operation


class AppFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    region = django_filters.CharFilter(field_name="nodes__region__code", distinct=True)
    include_deleted = django_filters.BooleanFilter(method="filter_deleted", label="include deleted apps")

    class Meta:
        model = ChainApp
        fields = ["status", "desired_state", "contract_template"]

    def filter_deleted(self, queryset, name, value):
        # Lists hide deleted apps unless asked (see AppViewSet.get_queryset); details show them.
        return queryset


class OperationFilter(django_filters.FilterSet):
    # A plain UUID filter, not a model choice: validating against all apps would reveal
    # whether another tenant's app id exists.
    app = django_filters.UUIDFilter(field_name="app_id")

    class Meta:
        model = Operation
        fields = ["app", "status", "kind"]

"""Usage of an app (GET /api/v1/apps/{id}/usage) and of the caller's tenant (GET /api/v1/tenant/usage)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.chainapps.models import ChainApp
from apps.common.viewsets import TenantScopedViewSet
from apps.metering import selectors
from apps.metering.api import serializers as s
from apps.tenants.context import request_membership

RANGE_PARAMETERS = [
    OpenApiParameter("from", OpenApiTypes.DATETIME, description="start, ISO 8601 (UTC without offset)"),
    OpenApiParameter("to", OpenApiTypes.DATETIME, description="end (exclusive), ISO 8601; default now"),
    OpenApiParameter("step", OpenApiTypes.STR, enum=list(selectors.STEPS), description="hour (default) or day"),
]


def _range(request, *, per_bucket: bool) -> selectors.Range:
    data = s.UsageQuerySerializer(data=request.query_params.dict(), context={"per_bucket": per_bucket})
    data.is_valid(raise_exception=True)
    return data.validated_data


def _bounds(rng: selectors.Range) -> dict:
    return {"from": rng.start, "to": rng.end, "step": rng.step}


class AppUsageViewSet(TenantScopedViewSet):
    """Metered usage of one app (rows of UsageHour, added up per bucket)."""

    queryset = ChainApp.objects.all()
    filter_backends: list = []
    pagination_class = None

    @extend_schema(
        parameters=RANGE_PARAMETERS,
        responses={200: s.AppUsageSerializer},
        description=(
            "Usage per hour or day over `[from, to)` (rounded out to whole steps; default the last 24 steps), "
            "every bucket listed, with totals. Counters are flushed from the gateway every "
            "`BSN_METERING_FLUSH_INTERVAL` (60 s) and nodes scraped every `BSN_METERING_SCRAPE_INTERVAL`. "
            "At most `BSN_USAGE_MAX_BUCKETS` (744) buckets and 366 days per answer."
        ),
    )
    @action(detail=True, methods=["get"], url_path="usage")
    def usage(self, request, pk=None):
        app = self.get_object()
        rng = _range(request, per_bucket=True)
        body = {"app": app.pk, **_bounds(rng), **selectors.app_usage(app=app, rng=rng)}
        return Response(s.AppUsageSerializer(body).data)


class TenantUsageView(APIView):
    @extend_schema(
        parameters=RANGE_PARAMETERS,
        responses={200: s.TenantUsageSerializer},
        description=(
            "Usage of each of the caller's tenant's apps over `[from, to)` (live apps, and deleted ones with usage "
            "in the range), with totals. `step` only rounds the range (at most 366 days)."
        ),
    )
    def get(self, request):
        tenant = request_membership(request).tenant
        rng = _range(request, per_bucket=False)
        body = {**_bounds(rng), **selectors.tenant_usage_by_app(tenant=tenant, rng=rng)}
        return Response(s.TenantUsageSerializer(body).data)

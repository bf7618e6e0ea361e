"""Chain apps, their nodes, operations and the framework catalogue."""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from apps.chainapps import services
from apps.chainapps.api import serializers as s
from apps.chainapps.api.filters import AppFilter, OperationFilter
from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.chainapps.selectors import app_nodes
from apps.common.viewsets import TenantScopedViewSet
from apps.tenants.context import is_platform_staff


def accepted(operation: Operation, request) -> Response:
    """202 with the operation in the body and its URL in Location."""
    body = s.OperationSerializer(operation, context={"request": request}).data
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class FrameworkViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Framework.objects.filter(is_active=True)
    serializer_class = s.FrameworkSerializer
    lookup_field = "slug"
    filterset_fields = ["builtin"]


class AppViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    queryset = ChainApp.objects.select_related("framework").prefetch_related(
        Prefetch("nodes", queryset=LedgerNode.objects.select_related("region").order_by("region__code")),
        # Why billing stopped an app (apps.billing; by relation name, so chainapps imports nothing of it).
        "billing_suspensions__suspension",
    )
    serializer_class = s.AppOutputSerializer
    filterset_class = AppFilter
    ordering_fields = ["created_at", "name", "status"]

    def get_queryset(self):
        queryset = super().get_queryset()
        include_deleted = self.request.query_params.get("include_deleted", "").lower() in ("true", "1")
        if self.action == "list" and not include_deleted:
            queryset = queryset.filter(deleted_at__isnull=True)
        return queryset

    def retrieve(self, request, *args, **kwargs):
        from apps.gateway.services import tps_in_use
        from apps.metering.selectors import app_storage_in_use

        app = self.get_object()
        context = {
            **self.get_serializer_context(),
            "tps_in_use": {str(app.pk): tps_in_use(app=app)},
            "storage_in_use": {str(app.pk): app_storage_in_use(app=app)},
        }
        return Response(self.get_serializer_class()(app, context=context).data)

    @extend_schema(
        request=s.AppCreateInputSerializer,
        responses={202: s.OperationSerializer},
        # "Try it out" sends this as given: the demo's region (make run seeds cn-beijing).
        examples=[
            OpenApiExample(
                "One region, defaults for the rest",
                value={"name": "hello", "regions": ["cn-beijing"]},
                request_only=True,
            )
        ],
        description=(
            "Answers 202 with the provision operation; the new app's id is its `app` field and `Location` "
            "is the operation's URL: poll it until `status` is `succeeded`."
        ),
    )
    def create(self, request):
        data = s.AppCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        spec = services.ChainAppSpec(**data.validated_data)
        operation = services.chainapp_create(tenant=self.tenant, actor=request.user, spec=spec, request=request)
        return accepted(operation, request)

    @extend_schema(request=s.AppUpdateInputSerializer, responses=s.AppOutputSerializer)
    def partial_update(self, request, pk=None):
        app = self.get_object()
        data = s.AppUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        app = services.chainapp_update(app=app, actor=request.user, data=data.validated_data, request=request)
        return Response(self.get_serializer(self.get_queryset().get(pk=app.pk)).data)

    @extend_schema(
        parameters=[OpenApiParameter("keep_data", OpenApiTypes.BOOL, description="keep data volumes (default true)")],
        responses={202: s.OperationSerializer},
    )
    def destroy(self, request, pk=None):
        raw = request.query_params.get("keep_data", "true").lower()
        if raw not in ("true", "false", "1", "0"):
            raise ValidationError({"keep_data": "must be true or false"})
        operation = services.chainapp_delete(
            app=self.get_object(), actor=request.user, keep_data=raw in ("true", "1"), request=request
        )
        return accepted(operation, request)

    @extend_schema(request=None, responses={202: s.OperationSerializer})
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return accepted(services.chainapp_start(app=self.get_object(), actor=request.user, request=request), request)

    @extend_schema(request=None, responses={202: s.OperationSerializer})
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return accepted(services.chainapp_stop(app=self.get_object(), actor=request.user, request=request), request)

    @extend_schema(request=s.AppUpgradeInputSerializer, responses={202: s.OperationSerializer})
    @action(detail=True, methods=["post"])
    def upgrade(self, request, pk=None):
        """Rolling upgrade to another version of the app's framework, one node at a time."""
        app = self.get_object()
        data = s.AppUpgradeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        operation = services.chainapp_upgrade(
            app=app, actor=request.user, framework=data.validated_data["framework"], request=request
        )
        return accepted(operation, request)

    @extend_schema(request=None, responses={202: s.OperationSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-credentials")
    def rotate_credentials(self, request, pk=None):
        """Give every node a new API credential, one node at a time (each must prove itself
        with the new one at the chain head before the next is touched)."""
        operation = services.chainapp_rotate_credentials(app=self.get_object(), actor=request.user, request=request)
        return accepted(operation, request)

    @extend_schema(
        request=s.AppScaleInputSerializer,
        responses={202: s.OperationSerializer},
        examples=[OpenApiExample("Two regions", value={"regions": ["cn-beijing", "cn-shanghai"]}, request_only=True)],
    )
    @action(detail=True, methods=["post"])
    def scale(self, request, pk=None):
        """Set the regions the app runs in: nodes are added on new ones, removed from dropped ones."""
        app = self.get_object()
        data = s.AppScaleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        operation = services.chainapp_scale(app=app, actor=request.user, **data.validated_data, request=request)
        return accepted(operation, request)

    @extend_schema(responses=s.NodeSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"], filterset_class=None, ordering_fields=[])
    def nodes(self, request, pk=None):
        app = self.get_object()
        page = self.paginate_queryset(app_nodes(app=app))
        services.node_facts_refresh_if_old(page)
        serializer = s.StaffNodeSerializer if is_platform_staff(request) else s.NodeSerializer
        return self.get_paginated_response(serializer(page, many=True).data)


class OperationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    queryset = Operation.objects.select_related("created_by")
    serializer_class = s.OperationSerializer
    filterset_class = OperationFilter
    ordering_fields = ["created_at", "status"]

    @extend_schema(request=None, responses={200: s.OperationSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel an operation that has not finished (not a delete); 409 otherwise."""
        operation = services.operation_cancel(operation=self.get_object(), actor=request.user, request=request)
        return Response(self.get_serializer(operation).data)

"""Billing routes: the tenant's invoices (admins and owners), the price list (staff write, all read),
and a month close for staff. Views parse, authorize, call a service, serialize."""

from __future__ import annotations

from django.http import HttpResponse
from django.template.loader import render_to_string
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.billing import selectors, services
from apps.billing.api import serializers as s
from apps.billing.presentation import invoice_context
from apps.common.errors import DomainError
from apps.common.viewsets import TenantScopedViewSet
from apps.tenants.context import request_membership
from apps.tenants.models import Role, Tenant


def require_staff(request) -> None:
    """Platform staff only: Django staff, or an admin/owner of the platform tenant."""
    membership = request_membership(request)
    platform_admin = (
        membership is not None and membership.tenant.kind == Tenant.Kind.PLATFORM and membership.has_role(Role.ADMIN)
    )
    if not (getattr(request.user, "is_staff", False) or platform_admin):
        raise DomainError("Prices and billing runs are set by platform staff.", code="staff-only", status=403)


class InvoiceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """The caller's tenant's invoices. Money is for the tenant's admins and owners."""

    read_role = Role.ADMIN
    filterset_fields = ["status"]
    ordering_fields = ["month", "total_fen", "due_at"]

    def get_queryset(self):
        from apps.billing.models import Invoice

        if getattr(self, "swagger_fake_view", False):
            return Invoice.objects.none()
        if self.tenant is None:
            return Invoice.objects.none()
        return self.scope(selectors.invoices_of(self.tenant, with_lines=self.action in ("retrieve", "html")))

    def get_serializer_class(self):
        return s.InvoiceDetailSerializer if self.action == "retrieve" else s.InvoiceSerializer

    @extend_schema(responses={(200, "text/html"): OpenApiResponse(OpenApiTypes.STR, description="printable invoice")})
    @action(detail=True, methods=["get"])
    def html(self, request, pk=None):
        invoice = self.get_object()
        page = render_to_string("billing/invoice.html", invoice_context(invoice))
        return HttpResponse(page, content_type="text/html; charset=utf-8")


class BillingView(APIView):
    """The tenant's billing at a glance (admins), and which of its corporate wallets pays (owner)."""

    read_role = Role.ADMIN
    write_role = Role.OWNER
    write_problem_codes = ("404",)  # a wallet that is not the tenant's corporate wallet (for the documented errors)

    @extend_schema(responses=s.BillingStatusSerializer)
    def get(self, request):
        tenant = request_membership(request).tenant
        return Response(s.BillingStatusSerializer(selectors.billing_status(tenant)).data)

    @extend_schema(request=s.BillingWalletInput, responses=s.BillingStatusSerializer)
    def put(self, request):
        membership = request_membership(request)
        data = s.BillingWalletInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.billing_account_set(
            tenant=membership.tenant, wallet_number=data.validated_data["wallet"], actor=request.user, request=request
        )
        return Response(s.BillingStatusSerializer(selectors.billing_status(membership.tenant)).data)


class PriceViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Every region's price lists (a catalogue every tenant reads); platform staff add new ones."""

    serializer_class = s.PriceListSerializer
    write_problem_codes = ("404",)  # no such region
    filterset_fields = ["region__code"]
    ordering_fields = ["valid_from", "region__code"]

    def get_queryset(self):
        return selectors.price_lists()

    @extend_schema(request=s.PriceSetInput, responses={201: s.PriceListSerializer})
    def create(self, request):
        require_staff(request)
        data = s.PriceSetInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        price = services.price_set(
            region_code=v["region"],
            valid_from=v["valid_from"],
            node_hour_fen=v["node_hour_fen"],
            per_1000_tx_fen=v["per_1000_tx_fen"],
            gb_month_fen=v["gb_month_fen"],
            operator_share_bp=v["operator_share_bp"],
            actor=request.user,
            request=request,
        )
        return Response(s.PriceListSerializer(price).data, status=status.HTTP_201_CREATED)


class MonthCloseView(APIView):
    """Platform staff: invoice every tenant's usage of a finished month now (idempotent)."""

    @extend_schema(request=s.MonthCloseInput, responses={200: OpenApiTypes.OBJECT})
    def post(self, request):
        require_staff(request)
        data = s.MonthCloseInput(data=request.data)
        data.is_valid(raise_exception=True)
        report = services.month_close(month=data.validated_data["month"], now=timezone.now())
        return Response(report)

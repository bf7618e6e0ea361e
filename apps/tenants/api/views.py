"""Auth, the caller's tenant, its members and its API tokens."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.chainapps.selectors import tenant_usage
from apps.common.viewsets import TenantScopedViewSet
from apps.tenants import services
from apps.tenants.api import serializers as s
from apps.tenants.api.filters import TokenFilter
from apps.tenants.context import request_membership
from apps.tenants.login import login
from apps.tenants.models import ApiToken, Membership, Role


def _issued(issued: services.IssuedToken) -> dict:
    data = s.IssuedTokenSerializer(issued.token).data
    data["token"] = issued.secret
    return data


class LoginView(APIView):
    authentication_classes: list = []
    problem_codes = ("429",)
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request) -> str:
        # Without an authentication class DRF turns AuthenticationFailed into a 403;
        # a wrong password is a 401 with a challenge like every other endpoint.
        return 'Token realm="api"'

    @extend_schema(
        request=s.LoginInputSerializer,
        responses={201: s.IssuedTokenSerializer},
        auth=[],
    )
    def post(self, request):
        data = s.LoginInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        issued = login(
            request=request,
            username=data.validated_data["username"],
            password=data.validated_data["password"],
            tenant_slug=data.validated_data.get("tenant"),
        )
        if issued is None:
            # One answer for every refusal (see apps/tenants/login.py); after
            # BSN_LOGIN_FAILURE_LIMIT of them axes's middleware answers 429 instead.
            raise AuthenticationFailed("Wrong username or password.")
        return Response(_issued(issued), status=status.HTTP_201_CREATED)


class LogoutView(APIView):
    # Any member may end their own session (POST would otherwise need the developer role).
    read_role = Role.VIEWER
    write_role = Role.VIEWER

    @extend_schema(request=None, responses={204: None})
    def post(self, request):
        if isinstance(request.auth, ApiToken):
            services.token_revoke(token=request.auth, actor=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TenantView(APIView):
    @extend_schema(responses=s.TenantOutputSerializer)
    def get(self, request):
        return Response(_tenant_body(request_membership(request)))

    @extend_schema(
        request=s.TenantQuotaInputSerializer,
        responses=s.TenantOutputSerializer,
        description="Set the tenant's quotas: platform staff only (403 `staff-only` for anyone else); audited "
        "with the values before. An empty body changes nothing.",
    )
    def patch(self, request):
        membership = request_membership(request)
        data = s.TenantQuotaInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data:
            services.tenant_quota_update(
                tenant=membership.tenant, actor=request.user, quotas=data.validated_data, request=request
            )
            membership.tenant.refresh_from_db()
        return Response(_tenant_body(membership))


def _tenant_body(membership) -> dict:
    """The tenant with its quotas, current use and the caller's role."""
    from apps.gateway.services import tps_in_use
    from apps.metering.selectors import tenant_storage_in_use, volume_today

    tenant = membership.tenant
    usage = {
        **tenant_usage(tenant=tenant),
        "tps_in_use": tps_in_use(tenant=tenant),
        "storage_in_use_bytes": tenant_storage_in_use(tenant=tenant),
        "volume_today_bytes": volume_today(tenant=tenant),
    }
    context = {"usage": usage, "role": membership.role}
    return s.TenantOutputSerializer(membership.tenant, context=context).data


class MemberViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    queryset = Membership.objects.select_related("user").order_by("created_at")
    serializer_class = s.MemberOutputSerializer
    write_role = Role.ADMIN
    filterset_fields = ["role"]

    @extend_schema(request=s.MemberCreateInputSerializer, responses={201: s.MemberOutputSerializer})
    def create(self, request):
        data = s.MemberCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.member_add(
            tenant=self.tenant, actor_membership=self.membership, request=request, **data.validated_data
        )
        return Response(s.MemberOutputSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.MemberUpdateInputSerializer, responses=s.MemberOutputSerializer)
    def partial_update(self, request, pk=None):
        membership = self.get_object()
        data = s.MemberUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.member_change_role(
            membership=membership, actor_membership=self.membership, role=data.validated_data["role"], request=request
        )
        return Response(s.MemberOutputSerializer(membership).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        services.member_remove(membership=self.get_object(), actor_membership=self.membership, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """API tokens of the tenant (admins and owners)."""

    queryset = ApiToken.objects.select_related("membership__user")
    serializer_class = s.TokenOutputSerializer
    tenant_field = "membership__tenant"
    filterset_class = TokenFilter
    read_role = Role.ADMIN
    write_role = Role.ADMIN

    @extend_schema(request=s.TokenCreateInputSerializer, responses={201: s.IssuedTokenSerializer})
    def create(self, request):
        data = s.TokenCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        issued = services.token_issue(
            membership=self.membership,
            name=data.validated_data["name"],
            ttl_days=data.validated_data.get("expires_in_days"),
            actor=request.user,
            request=request,
        )
        return Response(_issued(issued), status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        services.token_revoke(token=self.get_object(), actor=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)

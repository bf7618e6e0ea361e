"""What every DCEP view shares: the scope (selectors), the caller as an Actor, idempotent POSTs."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter

from apps.common.viewsets import TenantScopedViewSet
from apps.dcep import idempotency
from apps.dcep.errors import DcepError
from apps.dcep.models import Institution
from apps.dcep.services import Actor
from apps.tenants.context import request_membership
from apps.tenants.models import Tenant

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    location=OpenApiParameter.HEADER,
    required=True,
    description="1-255 printable ASCII characters, unique per request of your tenant; a resend with the same "
    "key and body gets the first response (kept at least 24 h).",
)


class DcepCaller:
    """The caller as an ``Actor``, and the check of its kind of institution (views and viewsets)."""

    problem_codes = ("503",)
    write_problem_codes = ("404", "422")  # a wallet that is not there or not yours; idempotency-key-reused

    @property
    def tenant(self):
        membership = request_membership(self.request)
        return membership.tenant if membership else None

    @property
    def actor(self) -> Actor:
        return Actor.of(self.tenant, self.request.user)

    def require(self, *kinds: str) -> Actor:
        """The caller must be an institution of one of ``kinds`` ("platform" for platform staff)."""
        actor = self.actor
        kind = actor.institution.kind if actor.institution is not None else None
        if kind in kinds or ("platform" in kinds and self.tenant.kind == Tenant.Kind.PLATFORM):
            return actor
        names = {Institution.Kind.CENTRAL_BANK: "the central bank", Institution.Kind.OPERATOR_BANK: "an operator bank"}
        who = " or ".join(names.get(k, "platform staff") for k in kinds)
        raise DcepError(f"Only {who} may do this.", code="not-allowed", status=403)


class DcepViewSet(DcepCaller, TenantScopedViewSet):
    """Scoping through ``visible`` (a selector of apps.dcep.selectors) instead of a tenant field.

    Reads: viewer. Money movement and wallet changes: developer or above (docs/dcep.md).
    """

    visible = None  # a function tenant -> queryset

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: the model, no rows
            return type(self).visible(None)
        return type(self).visible(self.tenant)

    def idempotent_local(self, work, *, look_first: bool = False):
        return idempotency.run_local(self.request, self.tenant, work, look_first=look_first)

    def idempotent_remote(self, work):
        return idempotency.run_remote(self.request, self.tenant, work)

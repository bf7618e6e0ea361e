"""Which tenant a request acts for — the one place that decides it."""

from __future__ import annotations

from apps.tenants.models import ApiToken, Membership, Tenant

TENANT_HEADER = "HTTP_X_BSN_TENANT"
SESSION_TENANT = "bsn_tenant"  # the tenant a browser session chose (the portal's switcher)


def request_membership(request) -> Membership | None:
    """The caller's membership: the token's, or for a browser session the only one (or the one
    named by X-BSN-Tenant, else the one the session chose in the portal)."""
    cached = getattr(request, "_bsn_membership", False)
    if cached is not False:
        return cached
    membership = None
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiToken):
        membership = auth.membership
    elif request.user is not None and request.user.is_authenticated:
        memberships = Membership.objects.usable_by(request.user)
        session = getattr(request, "session", None)
        wanted = request.META.get(TENANT_HEADER) or (session.get(SESSION_TENANT) if session is not None else None)
        if wanted:
            memberships = memberships.filter(tenant__slug=wanted)
        found = list(memberships[:2])
        membership = found[0] if len(found) == 1 else None
    request._bsn_membership = membership
    return membership


def is_platform_staff(request) -> bool:
    """The caller runs the platform (a member of the platform tenant, or Django staff):
    they may see operator information such as where a node listens."""
    membership = request_membership(request)
    if membership is not None and membership.tenant.kind == Tenant.Kind.PLATFORM:
        return True
    return bool(getattr(request.user, "is_staff", False))


def scope_to_tenant(queryset, tenant, tenant_field: str = "tenant"):
    """``queryset`` limited to ``tenant`` through ``tenant_field``; nothing without a tenant.
    The API's viewsets and the portal's pages both scope through here."""
    if tenant is None:
        return queryset.none()
    return queryset.filter(**{tenant_field: tenant})

"""Which navigation entries a member sees (``NAV``'s fourth element in views/base.py).

An entry is hidden where its page would only answer "your role does not allow this" or
have nothing to show; the pages themselves still check (hiding is not the rule)."""

from __future__ import annotations

from apps.dcep.selectors import institution_of, wallets_visible_to
from apps.tenants.models import Membership, Role


def is_admin(membership: Membership) -> bool:
    """Tokens and billing are read by admins and owners, as in the API."""
    return membership.has_role(Role.ADMIN)


def dcep_participant(membership: Membership) -> bool:
    """A bank (central or operator), or a tenant holding a wallet."""
    tenant = membership.tenant
    return institution_of(tenant) is not None or wallets_visible_to(tenant).exists()

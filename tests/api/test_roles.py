"""Role × action matrix: viewer reads; developer manages apps; admin also members and tokens; owner all."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.chainapps.models import ChainApp, Framework, Operation
from apps.tenants.models import ROLE_RANK, ApiToken, Membership, Role
from apps.tenants.services import token_issue
from tests.api.conftest import assert_problem, row_counts
from tests.factories import MembershipFactory

NEW_USER = {"username": "newbie", "role": "viewer", "password": "a-long-unusual-passphrase"}

# name: (method, path template, body, least role that may do it, success status)
ACTIONS = {
    "tenant.read": ("get", "/api/v1/tenant", None, Role.VIEWER, 200),
    "logout": ("post", "/api/v1/auth/logout", None, Role.VIEWER, 204),
    "regions.list": ("get", "/api/v1/regions", None, Role.VIEWER, 200),
    "regions.read": ("get", "/api/v1/regions/cn-beijing", None, Role.VIEWER, 200),
    "frameworks.list": ("get", "/api/v1/frameworks", None, Role.VIEWER, 200),
    "frameworks.read": ("get", "/api/v1/frameworks/bsn-ledger", None, Role.VIEWER, 200),
    "members.list": ("get", "/api/v1/tenant/members", None, Role.VIEWER, 200),
    "members.read": ("get", "/api/v1/tenant/members/{member}", None, Role.VIEWER, 200),
    "members.add": ("post", "/api/v1/tenant/members", NEW_USER, Role.ADMIN, 201),
    "members.role": ("patch", "/api/v1/tenant/members/{member}", {"role": "developer"}, Role.ADMIN, 200),
    "members.remove": ("delete", "/api/v1/tenant/members/{member}", None, Role.ADMIN, 204),
    "members.add-owner": ("post", "/api/v1/tenant/members", {**NEW_USER, "role": "owner"}, Role.OWNER, 201),
    "members.make-owner": ("patch", "/api/v1/tenant/members/{member}", {"role": "owner"}, Role.OWNER, 200),
    "members.demote-owner": ("patch", "/api/v1/tenant/members/{owner}", {"role": "admin"}, Role.OWNER, 200),
    "members.remove-owner": ("delete", "/api/v1/tenant/members/{owner}", None, Role.OWNER, 204),
    "tokens.list": ("get", "/api/v1/tokens", None, Role.ADMIN, 200),
    "tokens.read": ("get", "/api/v1/tokens/{token}", None, Role.ADMIN, 200),
    "tokens.create": ("post", "/api/v1/tokens", {"name": "ci"}, Role.ADMIN, 201),
    "tokens.revoke": ("delete", "/api/v1/tokens/{token}", None, Role.ADMIN, 204),
    "apps.list": ("get", "/api/v1/apps", None, Role.VIEWER, 200),
    "apps.read": ("get", "/api/v1/apps/{app}", None, Role.VIEWER, 200),
    "apps.nodes": ("get", "/api/v1/apps/{app}/nodes", None, Role.VIEWER, 200),
    "apps.create": ("post", "/api/v1/apps", {"name": "new-app", "regions": ["cn-shenzhen"]}, Role.DEVELOPER, 202),
    "apps.update": ("patch", "/api/v1/apps/{app}", {"description": "edited"}, Role.DEVELOPER, 200),
    "apps.stop": ("post", "/api/v1/apps/{app}/stop", None, Role.DEVELOPER, 202),
    "apps.start": ("post", "/api/v1/apps/{app}/start", None, Role.DEVELOPER, 202),
    "apps.upgrade": ("post", "/api/v1/apps/{app}/upgrade", {"framework": "bsn-ledger-next"}, Role.DEVELOPER, 202),
    "apps.scale": ("post", "/api/v1/apps/{app}/scale", {"regions": ["cn-beijing"]}, Role.DEVELOPER, 202),
    "apps.delete": ("delete", "/api/v1/apps/{app}", None, Role.DEVELOPER, 202),
    "operations.list": ("get", "/api/v1/operations", None, Role.VIEWER, 200),
    "operations.read": ("get", "/api/v1/operations/{operation}", None, Role.VIEWER, 200),
    "audit.list": ("get", "/api/v1/audit-events", None, Role.VIEWER, 200),
    "audit.read": ("get", "/api/v1/audit-events/{event}", None, Role.VIEWER, 200),
}


def _state(tenant) -> tuple:
    """What a refused write could have changed besides row counts."""
    return (
        sorted(Membership.objects.filter(tenant=tenant).values_list("id", "role")),
        sorted(ApiToken.objects.filter(membership__tenant=tenant).values_list("id", "revoked_at")),
        sorted(ChainApp.objects.filter(tenant=tenant).values_list("id", "name", "description", "desired_state")),
    )


@pytest.mark.django_db
@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(ACTIONS))
def test_role_matrix(client_with_role, owner, app_a, builtin_framework, action, role):
    method, template, body, least, ok_status = ACTIONS[action]
    # The next version of the app's framework, for the upgrade.
    Framework.objects.create(
        slug="bsn-ledger-next", name=builtin_framework.name, version="0.3.0", image=builtin_framework.image
    )
    # Objects the action may act on, none of them the caller's own membership or token.
    target = MembershipFactory(tenant=owner.tenant, role=Role.VIEWER)
    MembershipFactory(tenant=owner.tenant, role=Role.OWNER)  # so removing/demoting `owner` is not the last owner
    token = token_issue(membership=target, name="target").token
    ids = {
        "member": target.pk,
        "owner": owner.pk,
        "token": token.pk,
        "app": app_a.pk,
        "operation": Operation.objects.filter(app=app_a).first().pk,
        "event": AuditEvent.objects.first().pk,
    }
    client = client_with_role(role)
    before = row_counts(), _state(owner.tenant)
    resp = getattr(client, method)(template.format(**ids), body, format="json")
    if ROLE_RANK[role] >= ROLE_RANK[least]:
        assert resp.status_code == ok_status, resp.content
    else:
        assert_problem(resp, 403, "permission-denied")
        assert (row_counts(), _state(owner.tenant)) == before

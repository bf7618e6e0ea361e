"""Where a node listens is operator information: tenants never see it, platform staff do."""

from __future__ import annotations

import pytest

from apps.chainapps.models import LedgerNode
from apps.tenants.models import Tenant
from tests.api.conftest import make_app
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("role", ["owner", "admin", "developer", "viewer"])
def test_tenants_do_not_see_node_endpoints(owner, client_with_role, regions, role):
    app = make_app(owner, "hidden", regions=("cn-beijing",))
    LedgerNode.objects.filter(app=app).update(state="running", endpoint="http://10.1.2.3:31234")
    resp = client_with_role(role).get(f"/api/v1/apps/{app.pk}/nodes")
    assert resp.status_code == 200
    (node,) = resp.json()["results"]
    assert "endpoint" not in node and b"31234" not in resp.content
    assert b"31234" not in client_with_role(role).get(f"/api/v1/apps/{app.pk}").content


def test_platform_staff_see_them(regions):
    platform = TenantFactory(kind=Tenant.Kind.PLATFORM)
    staff = MembershipFactory(tenant=platform, role="owner")
    app = make_app(staff, "ops", regions=("cn-beijing",))
    LedgerNode.objects.filter(app=app).update(state="running", endpoint="http://10.1.2.3:31234")
    (node,) = _client_for(staff).get(f"/api/v1/apps/{app.pk}/nodes").json()["results"]
    assert node["endpoint"] == "http://10.1.2.3:31234"

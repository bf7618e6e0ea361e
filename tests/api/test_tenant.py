"""GET /api/v1/tenant: the caller's tenant, their role, quotas and current usage."""

from __future__ import annotations

import pytest

from apps.tenants.models import Role
from tests.api.conftest import assert_problem, make_app

URL = "/api/v1/tenant"


@pytest.mark.django_db
def test_tenant_shows_quotas_and_zero_usage(owner_client, tenant_a):
    resp = owner_client.get(URL)
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == str(tenant_a.pk)
    assert (body["slug"], body["kind"], body["role"]) == ("acme", "enterprise", "owner")
    assert body["quotas"] == {
        "max_apps": 10,
        "max_nodes": 30,
        "max_tps": 100,
        "max_storage_mb": 10240,
        "max_daily_volume_mb": 1024,
    }
    assert body["usage"] == {
        "apps": 0,
        "nodes": 0,
        "tps": 0,
        "tps_in_use": 0,
        "storage_mb": 0,
        "storage_in_use_bytes": None,
        "volume_today_bytes": 0,
    }


@pytest.mark.django_db
def test_usage_counts_live_apps_only(owner_client, owner, regions):
    make_app(owner, "one", regions=("cn-beijing", "cn-shanghai"), tps_quota=20, storage_mb=100)
    make_app(owner, "two", tps_quota=5, storage_mb=50)
    gone = make_app(owner, "gone", tps_quota=7, storage_mb=70)
    owner_client.delete(f"/api/v1/apps/{gone.pk}")
    usage = owner_client.get(URL).json()["usage"]
    assert usage == {
        "apps": 2,
        "nodes": 3,
        "tps": 25,
        "tps_in_use": 0,
        "storage_mb": 150,
        "storage_in_use_bytes": None,
        "volume_today_bytes": 0,
    }


@pytest.mark.django_db
@pytest.mark.parametrize("role", list(Role))
def test_every_role_reads_its_tenant_and_sees_its_role(client_with_role, role):
    body = client_with_role(role).get(URL).json()
    assert (body["slug"], body["role"]) == ("acme", role)


@pytest.mark.django_db
def test_outsider_sees_only_its_own_tenant(outsider_client, tenant_a, tenant_b):
    body = outsider_client.get(URL).json()
    assert body["id"] == str(tenant_b.pk)
    assert str(tenant_a.pk) not in str(body)


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_tenant_is_read_only_over_the_api(owner_client, method):
    # Quotas are the operator's (platform staff: PATCH, admin portal, manage.py), never the tenant's to raise.
    resp = getattr(owner_client, method)(URL, {"max_apps": 1000}, format="json")
    if method == "patch":
        assert_problem(resp, 403, "staff-only")
    else:
        assert_problem(resp, 405, "method-not-allowed")
    assert owner_client.get(URL).json()["quotas"]["max_apps"] == 10

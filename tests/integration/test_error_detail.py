"""Tenants see a reason and a reference; platform staff see the internal detail (issue 8, §7).

A real worker provisions an app in a region whose Docker engine does not answer. The
driver's error names the engine's URL; the tenant's operation log, its last error, the
steps and the node's last error carry only a reason and a reference; a staff account
sees the engine error in the log entry's ``detail``.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest

from tests.conftest import _client_for
from tests.factories import MembershipFactory, RegionFactory, TenantFactory
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration]

DEAD_ENGINE = "unix:///run/bsn-no-engine-here.sock"  # nothing answers Docker there
REF = re.compile(r"\(ref ([0-9a-f]{12})\)")


def test_operation_errors_show_tenants_a_reference_and_staff_the_detail(transactional_db, worker_factory):
    region = RegionFactory(
        code=f"it{uuid.uuid4().hex[:6]}-dead", driver="docker", docker_base_url=DEAD_ENGINE, publish_host="127.0.0.1"
    )
    worker_factory([region])
    tenant = TenantFactory()
    api = _client_for(MembershipFactory(tenant=tenant, role="developer"))
    staff = _client_for(MembershipFactory(tenant=tenant, role="viewer", user__is_staff=True))

    resp = api.post("/api/v1/apps", {"name": "unlucky", "regions": [region.code]}, format="json")
    assert resp.status_code == 202, resp.content
    app_id, op_url = resp.json()["app"], resp["Location"]

    def retrying():
        body = api.get(op_url).json()
        return body if any("will retry" in entry["message"] for entry in body["log"]) else None

    body = wait_for(retrying, timeout=60, message="the first transient error in the operation log")
    shown = json.dumps(body) + json.dumps(api.get(f"/api/v1/apps/{app_id}/nodes").json())
    for internal in ("bsn-no-engine-here", "unix://", "Docker engine", "Traceback"):
        assert internal not in shown, internal
    index, entry = next((i, e) for i, e in enumerate(body["log"]) if "will retry" in e["message"])
    assert "the region's container engine does not answer" in entry["message"]
    ref = REF.search(entry["message"]).group(1)
    assert "detail" not in entry
    assert REF.search(body["last_error"])
    node = api.get(f"/api/v1/apps/{app_id}/nodes").json()["results"][0]
    assert REF.search(node["last_error"]) and "container engine" in node["last_error"]

    staff_entry = staff.get(op_url).json()["log"][index]
    assert staff_entry["message"] == entry["message"]
    assert DEAD_ENGINE in staff_entry["detail"] and ref in staff_entry["message"]

"""A tenant's developer in the portal, end to end on a real Docker region and a real
Celery worker: creates an app with the form, follows the operation page (its htmx
fragment, until it answers 286) to succeeded, sees the node running with a height, sees a
block once a transaction committed through the API, and deletes the app through the
confirmation page — its container gone afterwards."""

from __future__ import annotations

import re

import pytest

from apps.chainapps.models import ChainApp
from apps.runtime.spec import LABEL_APP
from bsn.client import Client as Signer
from bsn.client import generate_key
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration.conftest import wait_for
from tests.portal.conftest import post, signed_in

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def _follow(portal, op_url: str, timeout: float) -> str:
    """Poll the operation's fragment as the page does (every 2 s in a browser; faster
    here) until it answers 286, htmx's "stop polling"; its last HTML."""
    fragment = op_url + "status/"

    def finished():
        resp = portal.get(fragment, HTTP_HX_REQUEST="true")
        assert resp.status_code in (200, 286), resp.content[:500]
        return resp.content.decode() if resp.status_code == 286 else None

    return wait_for(finished, timeout=timeout, interval=0.5, message=f"{fragment} to answer 286")


def test_create_follow_transact_and_delete_through_the_portal(
    make_regions, worker_factory, docker_engine, ledger_image
):
    (region,) = make_regions("docker")
    worker_factory([region])
    member = MembershipFactory(tenant=TenantFactory(), role="developer", user__username="devi")
    portal = signed_in(member)

    form = portal.get("/portal/apps/new/").content.decode()
    assert f'value="{region.code}"' in form
    resp = post(
        portal,
        "/portal/apps/new/",
        {
            "name": "portal-e2e",
            "framework": "bsn-ledger",
            "contract_template": "kv",
            "contract_params": "{}",
            "regions": [region.code],
            "tps_quota": "20",
            "storage_mb": "256",
        },
    )
    assert resp.status_code == 302, resp.content.decode()[:3000]
    op_url = resp["Location"]
    assert re.fullmatch(r"/portal/operations/[0-9a-f-]{36}/", op_url)
    assert 'hx-trigger="every 2s"' in portal.get(op_url).content.decode()  # live while it runs
    done = _follow(portal, op_url, timeout=180)
    assert ">succeeded</span>" in done, done
    app = ChainApp.objects.get(name="portal-e2e", tenant=member.tenant)
    app_url = f"/portal/apps/{app.pk}/"

    # The node, as the page shows it: running, with a height (facts refreshed by the worker).
    def node_row():
        html = portal.get(app_url).content.decode()
        row = re.search(rf"<th scope=\"row\">{region.code}</th>\s*<td>(.*?)</td>\s*<td class=\"num\">(\d+)</td>", html)
        return (row.group(1), int(row.group(2)), html) if row and ">running<" in row.group(1) else None

    _, height, html = wait_for(node_row, timeout=60, interval=1, message="the node running with a height")
    assert ">running</span>" in html and "Ledger unavailable" not in html

    # A transaction committed through the API (as the tenant's systems send them)…
    api = _client_for(member)
    private, public = generate_key()
    resp = api.post(f"/api/v1/apps/{app.pk}/users", {"name": "alice", "public_key": public}, format="json")
    assert resp.status_code == 201, resp.content
    signer = Signer("http://unused", "-", str(app.pk), "alice", private)
    envelope = signer.sign("kv", "put", {"key": "greeting", "value": "ni hao"})
    resp = api.post(f"/api/v1/apps/{app.pk}/transactions", envelope, format="json")
    assert resp.status_code == 200 and resp.json()["status"] == "committed", resp.content
    receipt = resp.json()

    # …is a block on the app's page, with its transaction and receipt one click away.
    html = portal.get(app_url).content.decode()
    assert f'href="{app_url}blocks/{receipt["height"]}/"' in html and "kv.put" in html
    assert receipt["height"] > height
    block = portal.get(f"{app_url}blocks/{receipt['height']}/").content.decode()
    assert receipt["tx_id"] in block and ">committed</span>" in block and "kv.put by alice" in block
    state = portal.get(f"{app_url}state/", {"contract": "kv", "key": "greeting"}).content.decode()
    assert "ni hao" in state

    # Delete through the confirmation page (the name typed), data not kept.
    assert "Type the app's name" in portal.get(f"{app_url}delete/").content.decode()
    resp = post(portal, f"{app_url}delete/", {"confirm_name": "portal-e2e"})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    done = _follow(portal, resp["Location"], timeout=120)
    assert ">succeeded</span>" in done, done
    selector = {"label": f"{LABEL_APP}={app.pk}"}
    assert docker_engine.containers.list(all=True, filters=selector) == []
    assert docker_engine.volumes.list(filters=selector) == []
    assert "This app was deleted" in portal.get(app_url).content.decode()

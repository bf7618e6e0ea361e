"""Screenshots of the portal for docs/portal.md.

``make screenshots`` runs this with ``BSN_SCREENSHOTS_DIR=docs/portal`` and so rewrites the
PNGs there; a plain test run writes them to a temporary folder (tests never rewrite
tracked files) and only checks that each is a real picture of the page.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from apps.chainapps.models import ChainApp, LedgerNode, Operation
from tests.api.conftest import make_app
from tests.browser.conftest import sign_in


@pytest.fixture
def out_dir(screenshots_dir) -> Path:
    return screenshots_dir


@pytest.fixture
def demo_tenant(owner, regions):
    """A tenant as it looks after a day's work: apps running, one provisioning, one failed."""
    states = [
        ("trade-finance", ("cn-beijing", "cn-shanghai", "cn-shenzhen"), "running", "running"),
        ("notary", ("cn-shanghai",), "running", "running"),
        ("loyalty-points", ("cn-beijing", "cn-shenzhen"), "provisioning", "pending"),
        ("kv-sandbox", ("cn-shenzhen",), "failed", "missing"),
    ]
    for name, where, status, node_state in states:
        app = make_app(owner, name, regions=where)
        ChainApp.objects.filter(pk=app.pk).update(status=status)
        LedgerNode.objects.filter(app=app).update(state=node_state)
        op_status = {"running": "succeeded", "failed": "failed"}.get(status, "running")
        Operation.objects.filter(app=app).update(status=op_status)
    return owner.tenant


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_screenshots_of_login_and_dashboard(desktop, phone, demo_tenant, out_dir):
    page = desktop.new_page()
    page.goto("/portal/login/")
    page.screenshot(path=out_dir / "login.png")
    sign_in(page, "alice")
    assert page.get_by_role("rowheader", name="trade-finance").is_visible()
    page.screenshot(path=out_dir / "dashboard-desktop.png", full_page=True)

    mobile = sign_in(phone.new_page(), "alice")
    assert mobile.get_by_role("rowheader", name="kv-sandbox").is_visible()
    mobile.screenshot(path=out_dir / "dashboard-phone.png", full_page=True)

    assert png_size(out_dir / "login.png") == (1280, 800)
    assert png_size(out_dir / "dashboard-desktop.png")[0] == 1280
    assert png_size(out_dir / "dashboard-phone.png")[0] == 375 * 2  # device scale factor 2

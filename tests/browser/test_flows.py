"""Flows the other browser tests do not walk, as a person does them in chromium:

- on a real Docker region with a real Celery worker (also marked integration/docker): create
  an app through the form, watch the operation page turn to "succeeded" by htmx without a
  reload, open the app page with its node running, register an app user with a public key;
- a token's secret shown once (gone after a reload), a webhook added (its secret once);
- an operator's console dashboard, and draining a region with the admin action.

``BSN_SCREENSHOTS_DIR`` (``make screenshots``) makes the Docker flow save the operation and
app pages there; otherwise they go to a temporary folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from apps.audit.models import AuditEvent
from apps.chainapps import tasks
from apps.chainapps.models import ChainApp
from apps.common.models import installation_id
from apps.regions.models import Region
from apps.tenants.models import ApiToken
from apps.webhooks.models import Webhook
from bsn.client import Client as Signer
from bsn.client import generate_key
from tests.api.conftest import make_app
from tests.browser.conftest import axe_violations, horizontal_overflow, sign_in
from tests.conftest import _client_for
from tests.factories import MembershipFactory, TenantFactory
from tests.integration import conftest as integration

OPERATOR_PASSWORD = "platform-operator-passphrase"
make_regions, worker_factory = integration.make_regions, integration.worker_factory  # fixtures
# The integration tests' end-of-session cleanup too: the live flow's app and the ordering
# cluster it brings up were left running on the main engine.
leave_nothing_behind = integration.leave_nothing_behind
SEND = tasks.enqueue_operation  # the real one, before the package's no_broker replaces it


@pytest.fixture
def shots(screenshots_dir) -> Path:
    return screenshots_dir


# --------------------------------------------------------------------------- Docker + worker


@pytest.fixture
def live_worker(monkeypatch):
    """Undo the package's ``no_broker``: operations go to Redis, where this test's worker takes them."""
    monkeypatch.setattr("apps.chainapps.tasks.enqueue_operation", SEND)


@pytest.mark.integration
@pytest.mark.docker
def test_create_an_app_and_watch_it_come_up_live(
    desktop,
    phone,
    watch,
    live_worker,
    make_regions,
    worker_factory,
    docker_engine,
    ledger_image,
    shots,
):
    (region,) = make_regions("docker")
    integration._installations_seen.add(installation_id())  # what it runs is removed at the end
    worker_factory([region])
    member = MembershipFactory(tenant=TenantFactory(), role="developer", user__username="devi")
    page = sign_in(desktop.new_page(), "devi")

    page.get_by_role("link", name=re.compile(r"Create .*app", re.I)).first.click()
    page.get_by_label("Name", exact=True).fill("live-e2e")
    page.get_by_label(re.compile(region.code)).check()
    page.get_by_role("button", name=re.compile("Create", re.I)).click()
    page.wait_for_url(re.compile(r"/portal/operations/[0-9a-f-]{36}/$"))
    op_url = page.url

    # A mark on this very document: if the page reloaded, it would be gone.
    page.evaluate("window.__sameDocument = true")
    status = page.locator("#op-state")
    expect(status).not_to_have_text("succeeded")  # it starts open
    expect(status).to_have_text("succeeded", timeout=180_000)
    assert page.url == op_url and page.evaluate("window.__sameDocument === true")
    page.screenshot(path=shots / "operation.png", full_page=True)

    page.get_by_role("link", name="Go to live-e2e").click()
    node = page.get_by_role("row", name=re.compile(region.code))

    def node_running():
        page.reload()
        return "running" in node.inner_text()

    for _ in range(30):  # the worker refreshes the node's facts; a reload shows them
        if node_running():
            break
        page.wait_for_timeout(2000)
    expect(node).to_contain_text("running")
    page.screenshot(path=shots / "app.png", full_page=True)

    app = ChainApp.objects.get(name="live-e2e", tenant=member.tenant)
    private, public = generate_key()
    page.goto(f"/portal/apps/{app.pk}/users/")
    page.get_by_label("Name", exact=True).fill("alice")
    page.get_by_label(re.compile("Upload a public key")).check()
    page.get_by_label(re.compile("^Public key")).fill(public)
    page.get_by_role("button", name="Register user").click()
    expect(page.get_by_role("status")).to_contain_text("User alice is registered on the ledger")
    expect(page.get_by_role("row", name=re.compile(r"\balice\b")).first).to_be_visible()
    assert AuditEvent.objects.filter(action__startswith="appuser.", actor=member.user).exists()

    # A transaction signed with alice's key, sent through the API as the tenant's systems do,
    # is a block on the app page; one click shows it with its transaction and receipt.
    signer = Signer("http://unused", "-", str(app.pk), "alice", private)
    envelope = signer.sign("kv", "put", {"key": "greeting", "value": "ni hao"})
    resp = _client_for(member).post(f"/api/v1/apps/{app.pk}/transactions", envelope, format="json")
    assert resp.status_code == 200 and resp.json()["status"] == "committed", resp.content
    receipt = resp.json()
    page.goto(f"/portal/apps/{app.pk}/")
    page.get_by_role("link", name=str(receipt["height"]), exact=True).first.click()
    page.wait_for_url(re.compile(rf"/blocks/{receipt['height']}/$"))
    expect(page.locator("main")).to_contain_text(receipt["tx_id"])
    expect(page.locator("main")).to_contain_text("kv.put by alice")

    # Another tenant's owner, in a browser of their own (the phone context: own cookies),
    # sees none of it: not on their dashboard, and every direct URL is the 404 page.
    watch.allow(r"status of 404")
    MembershipFactory(tenant=TenantFactory(), role="owner", user__username="olga")
    olga = sign_in(phone.new_page(), "olga")
    assert "live-e2e" not in olga.content()
    for url in (
        f"/portal/apps/{app.pk}/",
        op_url,
        f"/portal/apps/{app.pk}/blocks/{receipt['height']}/",
        f"/portal/apps/{app.pk}/users/",
    ):
        response = olga.goto(url)
        assert response.status == 404, url
        expect(olga.get_by_role("heading", name="Not found")).to_be_visible()
        assert "live-e2e" not in olga.content() and receipt["tx_id"] not in olga.content()


# --------------------------------------------------------------------------- secrets once


def test_a_tokens_secret_is_shown_once_and_gone_after_a_reload(signed_in_page, owner):
    page = signed_in_page
    page.goto("/portal/tokens/")
    page.get_by_label("Name").fill("ci deploy")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name=re.compile("ci deploy"))).to_be_visible()
    secret = page.get_by_label("Secret").input_value()
    assert len(secret) >= 20 and ApiToken.objects.filter(name="ci deploy").count() == 1
    page.goto("/portal/tokens/")  # back to the list: the name is there, the secret is not
    expect(page.get_by_text("ci deploy").first).to_be_visible()
    assert secret not in page.content()
    page.reload()
    assert secret not in page.content()


def test_a_webhook_is_added_and_its_secret_shown_once(signed_in_page, owner, regions):
    app = make_app(owner, "hooked")
    page = signed_in_page
    page.goto(f"/portal/apps/{app.pk}/webhooks/")
    page.get_by_label("URL").fill("https://hooks.example.com/bsn")
    page.get_by_label("Events").fill("*")
    page.get_by_role("button", name="Add webhook").click()
    expect(page.get_by_role("heading", name="Webhook to https://hooks.example.com/bsn added")).to_be_visible()
    secret = page.get_by_label("Signing secret").input_value()
    assert secret and Webhook.objects.filter(app=app).count() == 1
    page.get_by_role("link", name=re.compile("see its delivery log")).click()
    assert secret not in page.content()


# --------------------------------------------------------------------------- the operator console


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.test", OPERATOR_PASSWORD)


def test_an_operator_sees_the_dashboard_and_drains_a_region(page, operator, regions, shots):
    page.goto("/admin/console/")
    page.wait_for_url(re.compile(r"/admin/login/"))
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(OPERATOR_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/admin/console/$"))
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    expect(page.get_by_text("cn-beijing").first).to_be_visible()
    page.screenshot(path=shots / "console-dashboard.png", full_page=True)

    page.goto("/admin/regions/region/")
    page.get_by_role("row", name=re.compile("cn-beijing")).get_by_role("checkbox").check()
    page.get_by_label("Action:").select_option(value="drain")
    page.get_by_role("button", name="Go").click()
    expect(page.get_by_text("1 region(s) draining.")).to_be_visible()
    assert Region.objects.get(code="cn-beijing").status == Region.Status.DRAINING
    assert Region.objects.get(code="cn-shanghai").status == Region.Status.ACTIVE
    assert AuditEvent.objects.filter(action="region.draining", actor=operator).exists()


# --------------------------------------------------------------------------- upgrade, regions, cancel pages


def test_the_change_pages_read_well_and_work_with_the_keyboard(desktop, phone, owner, regions):
    """The confirmation pages of upgrade, scale and cancel: one h1, no serious axe finding on
    a desktop and a phone, nothing sticking out at 375 px; the upgrade form's button reached
    with Tab and sent with Enter."""
    from apps.chainapps.models import Framework, LedgerNode, Operation
    from tests.api.conftest import finish_open_operations

    builtin = Framework.objects.get(slug="bsn-ledger")
    Framework.objects.create(
        slug="bsn-ledger-next", name=builtin.name, version="0.3.0", image=builtin.image, contract_templates=["kv"]
    )
    app = make_app(owner, "ledger-a", regions=("cn-beijing", "cn-shanghai"))
    finish_open_operations(app.pk)
    ChainApp.objects.filter(pk=app.pk).update(status=ChainApp.Status.RUNNING)
    app.nodes.update(state=LedgerNode.State.RUNNING)
    page = sign_in(desktop.new_page(), "alice")
    page.goto(f"/portal/apps/{app.pk}/upgrade/")
    version = page.get_by_label("Move to version")
    version.select_option("bsn-ledger-next")
    version.focus()
    page.keyboard.press("Tab")  # from the labelled select to the button
    expect(page.get_by_role("button", name="Upgrade ledger-a")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/portal/operations/[0-9a-f-]{36}/$"))
    upgrade = Operation.objects.get(app=app, kind="upgrade")
    assert upgrade.params["framework"] == "bsn-ledger-next" and not upgrade.is_finished

    urls = [
        f"/portal/apps/{app.pk}/upgrade/",
        f"/portal/apps/{app.pk}/scale/",
        f"/portal/operations/{upgrade.pk}/cancel/",
    ]
    pages = {desktop: page, phone: sign_in(phone.new_page(), "alice")}
    for context, page in pages.items():
        for url in urls:
            assert page.goto(url).status == 200, url
            assert page.locator("h1").count() == 1, url
            assert axe_violations(page) == [], f"{url} at {page.viewport_size}"
            if context is phone:
                measured = horizontal_overflow(page)
                assert measured["scrollWidth"] <= measured["viewport"] and not measured["outside"], (url, measured)

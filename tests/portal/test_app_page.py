"""The app's page and its ledger pages (block, state) against a simulated node
(tests/fakenode.py SimLedger, reached through the gateway's services as the API reaches
it); a node that does not answer; usage charts; another tenant's app."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.chainapps.models import ChainApp, LedgerNode
from apps.metering.models import UsageHour
from bsn.client import Client as Signer
from bsn.client import generate_key
from tests.api.conftest import finish_open_operations, make_app, row_counts
from tests.fakenode import FakeNode
from tests.gateway.conftest import attach_sim, speak_as

pytestmark = pytest.mark.django_db


@pytest.fixture
def app(owner, regions) -> ChainApp:
    app = make_app(owner, "ledger-a", regions=("cn-beijing",))
    finish_open_operations(app.pk)
    ChainApp.objects.filter(pk=app.pk).update(status=ChainApp.Status.RUNNING)
    return ChainApp.objects.get(pk=app.pk)


@pytest.fixture
def sim(app):
    ledger = attach_sim(app.nodes.get())
    yield ledger
    ledger.close()


@pytest.fixture
def committed(owner_client, app, sim):
    """App user alice registered (block 1) and two kv puts committed (blocks 2 and 3)
    through the API, as a tenant's system sends them."""
    private, public = generate_key()
    resp = owner_client.post(f"/api/v1/apps/{app.pk}/users", {"name": "alice", "public_key": public}, format="json")
    assert resp.status_code == 201, resp.content
    signer = Signer("http://unused", "-", str(app.pk), "alice", private)
    receipts = []
    for key, value in (("greeting", "ni hao"), ("answer", 42)):
        resp = owner_client.post(
            f"/api/v1/apps/{app.pk}/transactions", signer.sign("kv", "put", {"key": key, "value": value}), format="json"
        )
        assert resp.status_code == 200, resp.content
        receipts.append(resp.json())
    return receipts


@pytest.fixture
def refreshes(monkeypatch):
    """Records the node refreshes a page queues (instead of sending them to a worker)."""
    asked: list[tuple[str, bool]] = []
    monkeypatch.setattr(
        "apps.chainapps.tasks.node_refresh_later", lambda node, facts=False: asked.append((str(node.pk), facts))
    )
    return asked


def _html(resp) -> str:
    return resp.content.decode()


def test_the_app_page_shows_nodes_chain_head_recent_blocks_and_transactions(
    member_portal, app, sim, committed, refreshes
):
    LedgerNode.objects.filter(app=app).update(chain_height=3, chain_head=sim.head, chain_seen_at=None)
    node = app.nodes.get()
    resp = member_portal.get(f"/portal/apps/{app.pk}/")
    html = _html(resp)
    assert resp.status_code == 200
    # nodes: from the database, as the API's nodes action shows them, with a facts refresh queued
    assert "cn-beijing" in html and ">running</span>" in html and '<td class="num">3</td>' in html
    assert (str(node.pk), True) in refreshes
    # the chain head and the last blocks, newest first, each linked to its page
    assert sim.head in html
    heights = [int(h) for h in __import__("re").findall(rf'href="/portal/apps/{app.pk}/blocks/(\d+)/">\1<', html)]
    assert heights[:3] == [3, 2, 1]
    assert "kv.put" in html and "_config.user.add" in html and committed[1]["tx_id"][:16] in html
    assert "alice" in html  # app users on the chain
    assert "Ledger unavailable" not in html
    # a state lookup form, labelled
    assert f'action="/portal/apps/{app.pk}/state/"' in html and '<label for="id_key">' in html


def test_a_block_with_its_transactions_and_receipts(member_portal, app, sim, committed):
    receipt = committed[0]
    resp = member_portal.get(f"/portal/apps/{app.pk}/blocks/{receipt['height']}/")
    html = _html(resp)
    assert resp.status_code == 200
    block = sim.blocks[receipt["height"] - 1]
    assert block["hash"] in html and block["header"]["merkle_root"] in html and block["header"]["prev_hash"] in html
    assert receipt["tx_id"] in html and "kv.put by alice" in html and "greeting" in html
    assert ">committed</span> index 0" in html  # the receipt, fetched through GET /tx/{id}
    assert f'href="/portal/apps/{app.pk}/blocks/{receipt["height"] - 1}/"' in html  # previous block


def test_a_block_the_chain_does_not_have_is_a_not_found_page(member_portal, app, sim, committed):
    resp = member_portal.get(f"/portal/apps/{app.pk}/blocks/99/")
    assert resp.status_code == 404 and "has no block 99" in _html(resp)


def test_state_lookup(member_portal, app, sim, committed):
    resp = member_portal.get(f"/portal/apps/{app.pk}/state/", {"contract": "kv", "key": "greeting"})
    assert resp.status_code == 200 and "ni hao" in _html(resp)
    resp = member_portal.get(f"/portal/apps/{app.pk}/state/", {"contract": "kv", "key": "nothing-here"})
    assert resp.status_code == 404 and "has no value" in _html(resp)
    resp = member_portal.get(f"/portal/apps/{app.pk}/state/", {"contract": "kv/../x", "key": ""})
    html = _html(resp)
    assert resp.status_code == 400 and "letters, digits and" in html and "enter a key" in html
    assert member_portal.get(f"/portal/apps/{app.pk}/state/").status_code == 200  # the empty form


def test_a_node_that_does_not_answer_leaves_the_rest_of_the_page(member_portal, app, settings, refreshes):
    """A node that accepts the connection but never answers: the page comes back after the
    gateway's read timeout, once, with the ledger 'unavailable' and the nodes still shown."""
    settings.BSN_GATEWAY_READ_TIMEOUT = 0.5
    silent = FakeNode()
    silent.delay = 5
    node = app.nodes.get()
    speak_as(silent, node)
    LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.RUNNING, endpoint=silent.endpoint)
    try:
        started = time.monotonic()
        resp = member_portal.get(f"/portal/apps/{app.pk}/")
        took = time.monotonic() - started
    finally:
        silent.close()
    html = _html(resp)
    assert resp.status_code == 200
    assert took < 3, took  # one read timeout, not one per block
    assert "Ledger unavailable" in html and "did not answer within 0.5s" in html
    assert "cn-beijing" in html and "Usage, last 24 hours" in html
    assert len(silent.requests) == 1  # no further call once the first failed


def test_no_running_node_says_why_without_calling_anything(member_portal, app, refreshes):
    LedgerNode.objects.filter(app=app).update(state=LedgerNode.State.STOPPED)
    html = _html(member_portal.get(f"/portal/apps/{app.pk}/"))
    assert "Ledger unavailable" in html and "none of its nodes is running" in html
    resp = member_portal.get(f"/portal/apps/{app.pk}/blocks/1/")
    assert resp.status_code == 503 and "Try again" in _html(resp)
    resp = member_portal.get(f"/portal/apps/{app.pk}/state/", {"contract": "kv", "key": "k"})
    assert resp.status_code == 503 and "Ledger unavailable" in _html(resp)


def test_usage_charts_are_server_rendered_svg_of_the_apps_metered_hours(member_portal, app, regions, refreshes):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    UsageHour.objects.create(
        app=app, region=regions[0], hour=hour - timedelta(hours=2), tx_committed=40, tx_rejected=2, bytes_in=8192
    )
    UsageHour.objects.create(app=app, region=regions[0], hour=hour, tx_committed=10, storage_bytes=4096 * 1024)
    html = _html(member_portal.get(f"/portal/apps/{app.pk}/"))
    assert html.count('<svg class="chart"') == 3 and "<script" not in html.split("<main")[1]
    label = (hour - timedelta(hours=2)).strftime("%H:%M")
    assert f"<title>{label}: 40 tx</title>" in html and f"<title>{hour:%H:%M}: 10 tx</title>" in html
    assert "50 committed, 2 rejected" in html
    assert f"<title>{label}: 8 KiB</title>" in html
    assert "peak 4,096 KiB of 1,024 MB" in html


@pytest.mark.parametrize(
    "path", ["", "blocks/1/", "state/?contract=kv&key=greeting", "operations/", "start/", "stop/", "delete/"]
)
def test_another_tenants_app_pages_are_not_found(outsider_portal, app, sim, committed, path):
    before = row_counts()
    requests_before = len(sim.node.requests)
    resp = outsider_portal.get(f"/portal/apps/{app.pk}/{path}")
    assert resp.status_code == 404 and "belongs to another tenant" in _html(resp)
    assert "ledger-a" not in _html(resp)
    assert len(sim.node.requests) == requests_before  # no node was asked
    assert row_counts() == before


def test_an_unknown_app_id_is_not_found(member_portal, regions):
    assert member_portal.get("/portal/apps/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert member_portal.get("/portal/apps/not-a-uuid/").status_code == 404


def test_a_height_past_any_chain_is_not_found_without_asking_a_node(member_portal, app, sim, committed):
    asked = len(sim.node.requests)
    resp = member_portal.get(f"/portal/apps/{app.pk}/blocks/{2**63}/")
    assert resp.status_code == 404 and len(sim.node.requests) == asked


def test_an_answer_too_deep_to_parse_is_shown_as_the_node_sent_it(member_portal, app):
    """A block committed before nodes refused deep transactions (RawJSON in the gateway)."""
    deep = '{"value": ' + "[" * 1200 + "]" * 1200 + "}"
    fake = FakeNode()
    fake.routes[("GET", "/state/kv/deep")] = (200, deep.encode())
    fake.routes[("GET", "/blocks/7")] = (200, ('{"hash": "ab", "txs": ' + "[" * 1200 + "]" * 1200 + "}").encode())
    node = app.nodes.get()
    speak_as(fake, node)
    LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.RUNNING, endpoint=fake.endpoint)
    try:
        state = member_portal.get(f"/portal/apps/{app.pk}/state/", {"contract": "kv", "key": "deep"})
        block = member_portal.get(f"/portal/apps/{app.pk}/blocks/7/")
    finally:
        fake.close()
    assert state.status_code == 200 and "Nested too deeply" in _html(state) and "[[[[" in _html(state)
    assert block.status_code == 200 and "nested too deeply" in _html(block) and "[[[[" in _html(block)


def test_a_slow_node_costs_about_one_read_timeout_not_one_per_block(member_portal, app, sim, committed, settings):
    """Each answer comes just within the read timeout: the page stops asking once one
    timeout has passed and shows what it got."""
    settings.BSN_GATEWAY_READ_TIMEOUT = 0.6
    sim.node.delay = 0.4
    asked = len(sim.node.requests)
    started = time.monotonic()
    resp = member_portal.get(f"/portal/apps/{app.pk}/")
    took = time.monotonic() - started
    html = _html(resp)
    assert resp.status_code == 200 and "answers slowly" in html and "Ledger unavailable" not in html
    assert len(sim.node.requests) - asked == 2  # the chain, one block; not the chain and three blocks
    assert took < 2.0, took
    assert f'href="/portal/apps/{app.pk}/blocks/3/"' in html

"""The console's dashboard (/admin/console/) answers "is the platform healthy?" with
figures that match the database, and says what is wrong when something is."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.chainapps.models import ChainApp, LedgerNode, Operation
from apps.ordering.models import OrderingCluster, OrderingMember
from apps.regions.models import Region
from tests.console.conftest import finish_open_operations, make_app

pytestmark = pytest.mark.django_db


def section(page: str, ident: str) -> str:
    """The HTML of one dashboard card."""
    start = page.index(f'id="{ident}"')
    return page[start : page.index("</section>", start)]


@pytest.fixture
def platform(owner, outsider, regions):
    """Apps in several states, operations failed recently and long ago, a draining and an unavailable region."""
    apps = [make_app(owner, f"a{i}", regions=("cn-beijing", "cn-shanghai")) for i in range(3)]
    apps.append(make_app(outsider, "b0", regions=("cn-beijing",)))
    for app in apps:
        finish_open_operations(app.pk)
    ChainApp.objects.filter(pk__in=[apps[0].pk, apps[3].pk]).update(status="running")
    ChainApp.objects.filter(pk=apps[1].pk).update(status="failed")
    ChainApp.objects.filter(pk=apps[2].pk).update(status="degraded")
    now = timezone.now()
    Operation.objects.create(
        tenant=owner.tenant,
        app=apps[1],
        kind="start",
        status="failed",
        finished_at=now - timedelta(hours=1),
        last_error="engine refused the container",
    )
    Operation.objects.create(
        tenant=owner.tenant, app=apps[1], kind="stop", status="failed", finished_at=now - timedelta(days=2)
    )
    Region.objects.filter(code="cn-shanghai").update(status="draining", max_nodes=3)
    Region.objects.filter(code="cn-shenzhen").update(status="unavailable", last_error="no answer")
    return apps


def test_dashboard_figures_match_the_database(console, platform):
    resp = console.get("/admin/console/")
    assert resp.status_code == 200
    page = resp.content.decode()

    apps = section(page, "apps")
    live = ChainApp.objects.filter(deleted_at__isnull=True)
    for status in ("running", "failed", "degraded", "pending", "stopped"):
        expected = live.filter(status=status).count()
        assert re.search(rf'data-status="{status}">{expected}<', apps), (status, expected)
    assert f"Apps</a> ({live.count()})" in apps

    regions = section(page, "regions")
    for region in Region.objects.all():
        used = LedgerNode.objects.filter(region=region, app__deleted_at__isnull=True).exclude(state="removed").count()
        row = regions[regions.index(f">{region.code}</a>") :].split("</tr>")[0]
        assert f'value="{used}"' in row and f"{used}/{region.max_nodes}" in row, (region.code, row)
    assert "4/100" in regions and "3/3" in regions  # cn-beijing: 3 + 1 apps; cn-shanghai full
    assert "active: <strong>1</strong>" in regions and "draining: <strong>1</strong>" in regions
    assert "unavailable: <strong>1</strong>" in regions

    failed = section(page, "failed-operations")
    recent = Operation.objects.filter(status="failed", finished_at__gte=timezone.now() - timedelta(hours=24))
    assert recent.count() == 1 and f">{recent.count()}</span>" in failed
    assert "engine refused the container" in failed

    verdict = page[page.index('id="verdict"') :]
    for problem in (
        "1 region(s) unavailable",
        "region(s) at capacity: cn-shanghai",
        "1 app(s) failed",
        "1 app(s) degraded",
        "1 operation(s) failed in the last 24 h",
    ):
        assert problem in verdict, problem
    assert "Needs attention" in page

    audit = section(page, "audit")
    assert f"{AuditEvent.objects.count()} event(s) verified" in audit and "intact" in audit


def test_healthy_platform_says_so(console, regions, redis_url):
    page = console.get("/admin/console/").content.decode()
    assert "Healthy: every check below holds" in page, page[page.index('id="verdict"') :][:600]
    assert "not provisioned" in section(page, "ordering").lower()
    assert "not set up" in section(page, "dcep")


def test_broker_down_is_shown(console, regions, monkeypatch):
    from bsn.celery import app as celery_app

    def unreachable(*args, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(celery_app, "connection_for_write", unreachable)
    page = console.get("/admin/console/").content.decode()
    assert "broker: error: ConnectionRefusedError" in page


def test_ordering_health_is_shown(console, regions):
    OrderingCluster.objects.create(token="t", root_password_encrypted="x", state="degraded", last_error="member 2 down")
    for index, region in enumerate(regions):
        OrderingMember.objects.create(
            index=index, region=region, name=f"bsn-etcd-{index}", state="running" if index else "unhealthy"
        )
    page = console.get("/admin/console/").content.decode()
    ordering = section(page, "ordering")
    assert "degraded" in ordering and "bsn-etcd-0" in ordering and "unhealthy" in ordering
    assert "ordering service degraded" in page
    members_page = console.get("/admin/ordering/orderingmember/").content.decode()
    assert 'id="ordering-health"' in members_page and "member 2 down" in members_page


def test_tampered_audit_event_is_caught(console, owner, regions):
    make_app(owner, "x")
    assert "Intact:" in console.get("/admin/audit/auditevent/verify/").content.decode()
    victim = AuditEvent.objects.order_by("sequence").first()
    with connection.cursor() as cursor:  # what an attacker with database access would do
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # run the deferred FK checks first
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_no_change")
        cursor.execute("UPDATE audit_auditevent SET actor_label = 'someone else' WHERE id = %s", [victim.pk])
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_no_change")
    page = console.get("/admin/audit/auditevent/verify/").content.decode()
    assert f"event #{victim.sequence}: content does not match its hash" in page and "Broken after" in page
    dashboard = console.get("/admin/console/").content.decode()  # the verify page refreshed the remembered result
    assert "audit chain broken" in dashboard and "BROKEN" in section(dashboard, "audit")


def test_index_links_the_dashboard_and_lists_the_audit_verify_tool(console):
    index = console.get("/admin/").content.decode()
    assert 'href="/admin/console/"' in index and "bsn operator console" in index
    assert 'href="/admin/audit/auditevent/verify/"' in console.get("/admin/audit/auditevent/").content.decode()


def test_dashboard_queries_do_not_grow_with_the_platform(console, owner, regions):
    from django.core.cache import cache
    from django.test.utils import CaptureQueriesContext

    from tests.factories import RegionFactory

    def queries() -> int:
        cache.clear()  # the audit walk counted every time
        with CaptureQueriesContext(connection) as ctx:
            assert console.get("/admin/console/").status_code == 200
        return len(ctx.captured_queries)

    make_app(owner, "first")
    small = queries()
    for i in range(5):
        RegionFactory(code=f"cn-extra-{i}", name=f"extra {i}")
    for i in range(6):
        app = make_app(owner, f"more-{i}", regions=("cn-beijing", "cn-shanghai"))
        Operation.objects.filter(app=app).update(status="failed", finished_at=timezone.now())
    assert queries() == small

"""Node seconds and storage from the scrape (apps.metering.services.node_observe)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db.models import Sum
from django.utils import timezone

from apps.chainapps.models import LedgerNode
from apps.metering import counters, services
from apps.metering.models import NodeMeter, UsageHour
from tests.api.conftest import make_app


def test_an_interval_is_split_over_the_hours_it_covers_without_losing_a_second():
    start = datetime(2026, 12, 1, 9, 59, 30, 400_000, tzinfo=UTC)
    pieces = services._split_by_hour(start, start + timedelta(seconds=95))
    assert pieces == [(datetime(2026, 12, 1, 9, tzinfo=UTC), 30), (datetime(2026, 12, 1, 10, tzinfo=UTC), 65)]
    # consecutive intervals add up to the whole, whatever the fractions
    a, b, c = start, start + timedelta(seconds=10.7), start + timedelta(seconds=70.2)
    total = sum(s for _, s in services._split_by_hour(a, b) + services._split_by_hour(b, c))
    assert total == int(c.timestamp()) - int(a.timestamp())


def seconds(app) -> int:
    return UsageHour.objects.filter(app=app).aggregate(s=Sum("node_seconds"))["s"] or 0


def test_seconds_count_only_between_two_passes_that_saw_the_node_running_and_at_most_the_gap(owner, regions, settings):
    app = make_app(owner, "timed")
    node = app.nodes.get()
    LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.RUNNING)
    assert services.node_observe(node=node, running=True, storage_bytes=100)["node_seconds"] == 0  # first sight
    NodeMeter.objects.filter(node=node).update(observed_at=timezone.now() - timedelta(seconds=50))
    added = services.node_observe(node=node, running=True, storage_bytes=120)["node_seconds"]
    assert 49 <= added <= 52 and seconds(app) == added
    NodeMeter.objects.filter(node=node).update(observed_at=timezone.now() - timedelta(seconds=50))
    assert services.node_observe(node=node, running=False, storage_bytes=None)["node_seconds"] == 0
    NodeMeter.objects.filter(node=node).update(observed_at=timezone.now() - timedelta(seconds=50))
    assert services.node_observe(node=node, running=True, storage_bytes=None)["node_seconds"] == 0  # was stopped
    settings.BSN_METERING_MAX_GAP = 30
    NodeMeter.objects.filter(node=node).update(observed_at=timezone.now() - timedelta(hours=5))
    assert services.node_observe(node=node, running=True, storage_bytes=None)["node_seconds"] in (30, 31)
    # the storage of this hour is the last reading, also after a pass that could not read it
    row = UsageHour.objects.get(app=app, hour=counters.hour_of(timezone.now()))
    assert row.storage_bytes == 120 and NodeMeter.objects.get(node=node).storage_bytes == 120

"""One repairing reconcile pass a region at a time, one ordering heal at a time, whoever
runs them (apps/common/leases.py): overlapping passes both restarted the same node (seen on
the three-host swarm test: a one-node app answered 503 for a moment)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from apps.chainapps import reconcile, tasks
from apps.common.leases import single_flight
from apps.ordering import services as ordering
from apps.ordering.models import OrderingCluster, OrderingMember
from apps.regions.models import Region
from tests.factories import RegionFactory


@pytest.mark.django_db
def test_a_lease_has_one_holder_until_it_is_given_back_or_runs_out():
    region = RegionFactory(code="cn-lease", driver="process")
    with single_flight(Region, region.pk, "reconcile_lease_until", 60) as first:
        with single_flight(Region, region.pk, "reconcile_lease_until", 60) as second:
            assert (first, second) == (True, False)
        assert Region.objects.get(pk=region.pk).reconcile_lease_until is not None  # the refused one gave back nothing
    assert Region.objects.get(pk=region.pk).reconcile_lease_until is None
    # A holder that died: its lease ends by itself.
    Region.objects.filter(pk=region.pk).update(reconcile_lease_until=timezone.now() - timedelta(seconds=1))
    with single_flight(Region, region.pk, "reconcile_lease_until", 60) as taken:
        assert taken
    # A lease that ran out and was taken by another is not given back by its first holder.
    with single_flight(Region, region.pk, "reconcile_lease_until", 60) as mine:
        assert mine
        other = timezone.now() + timedelta(seconds=30)
        Region.objects.filter(pk=region.pk).update(reconcile_lease_until=other)
    assert Region.objects.get(pk=region.pk).reconcile_lease_until == other


@pytest.mark.django_db
def test_a_pass_that_finds_another_running_does_nothing_and_says_so(monkeypatch):
    region = RegionFactory(code="cn-busy", driver="process")
    ran = []
    monkeypatch.setattr(reconcile, "_reconcile_region", lambda region, repair: ran.append(repair) or {"ok": 1})
    Region.objects.filter(pk=region.pk).update(reconcile_lease_until=timezone.now() + timedelta(seconds=60))
    report = tasks.reconcile_region(region.code)  # the periodic task: does not wait
    assert report == {"region": "cn-busy", "skipped": "another reconcile pass over this region is running"}
    assert reconcile.reconcile_region(region.code, repair=False) == {"ok": 1}  # a dry run repairs nothing: no lease
    assert ran == [False]
    call_command("bsn_reconcile", "--region", "cn-busy", "--dry-run")  # runs beside the held lease
    from apps.chainapps.management.commands import bsn_reconcile

    def no_wait(code, repair):  # the command waits up to 30 s for the lease; not here
        return reconcile.reconcile_region(code, repair=repair, wait=0)

    monkeypatch.setattr(bsn_reconcile, "reconcile_region", no_wait)
    with pytest.raises(CommandError, match="could not be reconciled: cn-busy"):
        call_command("bsn_reconcile", "--region", "cn-busy")
    assert ran == [False, False]


@pytest.mark.django_db(transaction=True)
def test_two_passes_at_once_make_one_pass_and_a_waiting_caller_runs_after_it(monkeypatch):
    region = RegionFactory(code="cn-twice", driver="process")
    running, ran = threading.Event(), []

    def slow_pass(region, repair):
        running.set()
        ran.append(threading.current_thread().name)
        time.sleep(0.5)
        return {"region": region.code}

    monkeypatch.setattr(reconcile, "_reconcile_region", slow_pass)
    reports = {}

    def worker(name, wait):
        try:
            reports[name] = reconcile.reconcile_region(region.code, wait=wait)
        finally:
            connection.close()

    first = threading.Thread(target=worker, args=("first", 0), name="first")
    first.start()
    assert running.wait(5)
    second = threading.Thread(target=worker, args=("second", 0), name="second")
    third = threading.Thread(target=worker, args=("third", 5), name="third")  # waits for the lease
    second.start(), third.start()
    for thread in (first, second, third):
        thread.join(10)
    assert "skipped" in reports["second"] and "skipped" not in reports["third"], reports
    assert ran == ["first", "third"]
    assert Region.objects.get(pk=region.pk).reconcile_lease_until is None


@pytest.mark.django_db
def test_an_ordering_heal_that_finds_another_running_does_nothing(monkeypatch):
    region = RegionFactory(code="cn-heal", driver="docker")
    OrderingCluster.objects.create(pk=1, token="t", root_password_encrypted="x")
    OrderingMember.objects.create(index=0, region=region, name="m0")
    monkeypatch.setattr(ordering, "_heal", lambda *a: pytest.fail("healed while another heal ran"))
    OrderingCluster.objects.update(heal_lease_until=timezone.now() + timedelta(seconds=60))
    report = ordering.ordering_heal(wait=0)
    assert report["skipped"] == "another heal or full check of the ordering service is running"
    assert report["members"] == 1  # what is there, though nothing was looked at
    assert report["restarted"] == [] and report["errors"] == []

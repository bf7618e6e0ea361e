"""Two create requests racing for one warm node (apps/chainapps/warm.py ``warm_claim``):
exactly one has it, the other makes its node on demand, and a request that rolls back
gives the warm node back. Each request is a thread with its own database connection and
transaction, as two API requests are (PostgreSQL: the row is locked, the loser skips it)."""

from __future__ import annotations

import threading
import uuid
from types import SimpleNamespace

import pytest
from django.db import connection, transaction

from apps.chainapps.models import WarmNode
from apps.chainapps.warm import warm_claim
from tests.factories import RegionFactory, WarmNodeFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _region_with_warm(count: int):
    region = RegionFactory(code=f"wr-{uuid.uuid4().hex[:6]}", driver="docker", warm_nodes=count)
    warm = [WarmNodeFactory(region=region, name=f"bsn-test-w{i}-{region.code}") for i in range(count)]
    return region, warm[0].framework


def _unsaved_node(region, framework):
    return SimpleNamespace(region=region, framework=framework, name="", host_port=None, warm="")


def _in_thread(fn):
    """Run ``fn`` in a thread of its own (its own connection, closed after); its result."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            out["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_the_second_request_skips_the_warm_node_the_first_holds_and_a_rollback_gives_it_back():
    region, framework = _region_with_warm(1)
    claimed, release = threading.Event(), threading.Event()

    def first():
        node = _unsaved_node(region, framework)
        with transaction.atomic():
            got = warm_claim(node)
            claimed.set()
            release.wait(10)  # the request's transaction is still open
            transaction.set_rollback(True)  # e.g. a quota check failed after the claim
        return got, node

    thread, out = _in_thread(first)
    assert claimed.wait(10)
    try:
        second = _unsaved_node(region, framework)
        with transaction.atomic():
            assert warm_claim(second) is False  # locked by the first: skipped, made on demand
        assert second.warm == "" and second.name == ""
    finally:
        release.set()
        thread.join(10)
    assert "error" not in out, out.get("error")
    got, node = out["value"]
    assert got is True and node.warm and node.name.startswith("bsn-test-w0")
    # The first request rolled back: the warm node is there again for the next one.
    assert WarmNode.objects.filter(region=region, state=WarmNode.State.READY).count() == 1
    third = _unsaved_node(region, framework)
    with transaction.atomic():
        assert warm_claim(third) is True
    assert third.name == node.name and WarmNode.objects.filter(region=region).count() == 0


def test_many_requests_at_once_take_each_warm_node_once():
    region, framework = _region_with_warm(2)
    start = threading.Barrier(6)

    def request():
        node = _unsaved_node(region, framework)
        start.wait(10)
        with transaction.atomic():
            return warm_claim(node), node.name

    runs = [_in_thread(request) for _ in range(6)]
    results = []
    for thread, out in runs:
        thread.join(20)
        assert "error" not in out, out.get("error")
        results.append(out["value"])
    names = [name for got, name in results if got]
    assert len(names) == 2 and len(set(names)) == 2  # two warm nodes, two owners, none twice
    assert all(name == "" for got, name in results if not got)
    assert WarmNode.objects.filter(region=region).count() == 0

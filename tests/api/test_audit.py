"""GET /api/v1/audit-events, and the append-only hash chain behind it."""

from __future__ import annotations

import itertools
import uuid

import pytest
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditEvent
from apps.audit.services import _event_hash, _hashed_fields, audit_verify
from tests.api.conftest import assert_problem, count_queries, make_app

URL = "/api/v1/audit-events"


def _some_activity(owner_client, regions) -> str:
    resp = owner_client.post("/api/v1/apps", {"name": "audited", "regions": ["cn-beijing"]}, format="json")
    app_id = resp.json()["app"]
    owner_client.patch(f"/api/v1/apps/{app_id}", {"description": "changed"}, format="json")
    owner_client.post("/api/v1/tokens", {"name": "ci"}, format="json")
    owner_client.delete(f"/api/v1/apps/{app_id}")
    return app_id


@pytest.mark.django_db
class TestAuditApi:
    def test_actions_are_recorded_and_listed_newest_first(self, owner_client, member_client, regions):
        app_id = _some_activity(owner_client, regions)
        body = member_client.get(URL).json()
        actions = [row["action"] for row in body["results"]]
        assert actions[:4] == ["app.delete", "token.create", "app.update", "app.create"]
        create = body["results"][3]
        assert (create["actor_label"], create["object_type"], create["object_id"]) == ("alice", "app", app_id)
        assert create["source_ip"] == "127.0.0.1"
        sequences = [row["sequence"] for row in body["results"]]
        assert sequences == sorted(sequences, reverse=True)

    def test_filters_and_detail(self, owner_client, member_client, regions):
        app_id = _some_activity(owner_client, regions)
        by_object = member_client.get(URL, {"object_id": app_id}).json()["results"]
        assert [row["action"] for row in by_object] == ["app.delete", "app.update", "app.create"]
        # the fixtures' two test tokens and the "ci" one
        tokens = member_client.get(URL, {"action": "token.create"}).json()["results"]
        assert sorted(row["data"]["name"] for row in tokens) == ["ci", "test", "test"]
        assert member_client.get(URL, {"object_type": "token"}).json()["count"] == 3
        event = by_object[0]
        assert member_client.get(f"{URL}/{event['id']}").json() == event
        assert_problem(member_client.get(f"{URL}/{uuid.uuid4()}"), 404)

    def test_events_link_by_hash_through_the_api(self, owner_client, regions):
        _some_activity(owner_client, regions)
        rows = sorted(owner_client.get(URL).json()["results"], key=lambda r: r["sequence"])
        for prev, event in itertools.pairwise(rows):
            if event["sequence"] == prev["sequence"] + 1:  # consecutive in the global chain
                assert event["prev_hash"] == prev["hash"]

    @pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
    def test_audit_api_is_read_only(self, owner_client, regions, method):
        _some_activity(owner_client, regions)
        event = AuditEvent.objects.order_by("sequence").first()
        before = (AuditEvent.objects.count(), event.hash, event.action)
        path = URL if method == "post" else f"{URL}/{event.pk}"
        assert_problem(getattr(owner_client, method)(path, {"action": "nothing.happened"}, format="json"), 405)
        event = AuditEvent.objects.get(pk=event.pk)
        assert (AuditEvent.objects.count(), event.hash, event.action) == before

    def test_list_query_count_does_not_grow_with_rows(self, member_client, owner, regions):
        make_app(owner, "a0")
        member_client.get(URL)
        few = count_queries(member_client, URL)
        for n in range(1, 9):
            make_app(owner, f"a{n}")
        assert count_queries(member_client, URL) == few


@pytest.mark.django_db
class TestChain:
    def test_chain_verifies_and_each_event_names_its_predecessor(self, owner_client, outsider_client, regions):
        _some_activity(owner_client, regions)
        outsider_client.post("/api/v1/tokens", {"name": "b"}, format="json")  # tenant B shares the chain
        ok, checked, problem = audit_verify()
        assert ok, problem
        events = list(AuditEvent.objects.order_by("sequence"))
        assert checked == len(events) >= 6
        assert events[0].prev_hash == "0" * 64
        for prev, event in itertools.pairwise(events):
            assert event.sequence == prev.sequence + 1
            assert event.prev_hash == prev.hash
            assert event.hash == _event_hash(_hashed_fields(event))

    def test_model_refuses_update_and_delete(self, owner_client, regions):
        _some_activity(owner_client, regions)
        event = AuditEvent.objects.first()
        event.action = "forged"
        with pytest.raises(PermissionError):
            event.save()
        with pytest.raises(PermissionError):
            event.delete()
        with pytest.raises(PermissionError):
            AuditEvent.objects.filter(pk=event.pk).update(action="forged")
        with pytest.raises(PermissionError):
            AuditEvent.objects.filter(pk=event.pk).delete()
        assert AuditEvent.objects.get(pk=event.pk).action != "forged"

    @pytest.mark.parametrize(
        "sql",
        ["UPDATE audit_auditevent SET action = 'forged'", "DELETE FROM audit_auditevent"],
        ids=["update", "delete"],
    )
    def test_database_refuses_update_and_delete(self, owner_client, regions, sql):
        if connection.vendor != "postgresql":
            pytest.skip("the append-only trigger is PostgreSQL's (migration audit 0002)")
        _some_activity(owner_client, regions)
        count = AuditEvent.objects.count()
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
        assert AuditEvent.objects.count() == count
        assert not AuditEvent.objects.filter(action="forged").exists()
        assert audit_verify()[0]

    def test_verify_detects_tampering(self, owner_client, regions):
        if connection.vendor != "postgresql":
            pytest.skip("needs the PostgreSQL trigger switched off to tamper")
        _some_activity(owner_client, regions)
        victim = AuditEvent.objects.order_by("sequence")[1]
        with connection.cursor() as cursor:  # only a table owner can do this; rolled back with the test
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks, or ALTER TABLE refuses
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_no_change")
            cursor.execute("UPDATE audit_auditevent SET data = '{\"forged\": true}' WHERE id = %s", [victim.pk])
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_no_change")
        ok, checked, problem = audit_verify()
        assert not ok
        assert checked == 2
        assert f"#{victim.sequence}" in problem

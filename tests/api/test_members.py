"""/api/v1/tenant/members: list, add (existing or new user), change role, remove; owner rules."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.tenants.models import Membership, Role
from tests.api.conftest import assert_problem, row_counts
from tests.factories import MembershipFactory

URL = "/api/v1/tenant/members"
User = get_user_model()


def detail(membership) -> str:
    return f"{URL}/{membership.pk}"


@pytest.mark.django_db
class TestList:
    def test_lists_the_tenants_members(self, owner_client, owner, member, outsider):
        resp = owner_client.get(URL)
        assert resp.status_code == 200
        body = resp.json()
        assert body["count"] == 2
        rows = {row["username"]: row for row in body["results"]}
        assert set(rows) == {"alice", "bob"}
        assert rows["bob"] == {
            "id": str(member.pk),
            "username": "bob",
            "email": "bob@example.test",
            "role": "developer",
            "created_at": rows["bob"]["created_at"],
        }

    def test_filter_by_role_and_paginate(self, owner_client, tenant_a):
        for _ in range(3):
            MembershipFactory(tenant=tenant_a, role=Role.VIEWER)
        viewers = owner_client.get(URL, {"role": "viewer"}).json()
        assert viewers["count"] == 3
        assert {row["role"] for row in viewers["results"]} == {"viewer"}
        page = owner_client.get(URL, {"page_size": 2}).json()
        assert (page["count"], len(page["results"])) == (4, 2)
        assert page["next"]
        assert_problem(owner_client.get(URL, {"role": "emperor"}), 400, "invalid")

    def test_retrieve(self, owner_client, member):
        assert owner_client.get(detail(member)).json()["username"] == "bob"

    def test_list_query_count_does_not_grow_with_rows(self, owner_client, tenant_a):
        from tests.api.conftest import count_queries

        MembershipFactory(tenant=tenant_a, role=Role.VIEWER)
        owner_client.get(URL)  # warm-up: records the token's first use
        few = count_queries(owner_client, URL)
        for _ in range(8):
            MembershipFactory(tenant=tenant_a, role=Role.VIEWER)
        assert count_queries(owner_client, URL) == few


@pytest.mark.django_db
class TestAdd:
    def test_create_a_new_user(self, owner_client, tenant_a):
        body = {
            "username": "carol",
            "email": "carol@example.test",
            "role": "developer",
            "password": "a-long-unusual-passphrase",
        }
        resp = owner_client.post(URL, body, format="json")
        assert resp.status_code == 201, resp.content
        assert resp.json()["role"] == "developer"
        membership = Membership.objects.get(pk=resp.json()["id"])
        # The account lives in the tenant's namespace: its login name is carol@acme.
        assert (membership.tenant, membership.user.username) == (tenant_a, "carol@acme")
        assert resp.json()["username"] == "carol@acme"
        assert "password" not in resp.json()
        login = APIClient().post(
            "/api/v1/auth/login", {"username": "carol@acme", "password": "a-long-unusual-passphrase"}, format="json"
        )
        assert login.status_code == 201
        event = AuditEvent.objects.get(action="member.add")
        assert (event.tenant, event.actor_label, event.data["username"]) == (tenant_a, "alice", "carol@acme")

    @pytest.mark.parametrize(
        ("body", "status", "field"),
        [
            ({"username": "carol", "role": "developer"}, 400, "password"),
            ({"username": "carol", "role": "developer", "password": "123"}, 400, "password"),
            ({"username": "carol", "role": "emperor", "password": "a-long-unusual-passphrase"}, 400, "role"),
            ({"username": "no spaces!", "role": "viewer", "password": "a-long-unusual-passphrase"}, 400, "username"),
            ({"username": "carol", "role": "viewer", "is_superuser": True}, 400, "is_superuser"),
            ({"username": ["carol"], "role": "viewer"}, 400, "username"),
            ({"username": "\u0430dmin", "role": "viewer", "password": "a-long-unusual-passphrase"}, 400, "username"),
            ({"username": "carol@globex", "role": "viewer", "password": "a-long-unusual-passphrase"}, 400, "username"),
        ],
        ids=[
            "new-user-no-password",
            "weak-password",
            "bad-role",
            "bad-username",
            "unknown-field",
            "wrong-type",
            "cyrillic-look-alike",
            "another-namespace",
        ],
    )
    def test_bad_input_changes_nothing(self, owner_client, member, body, status, field):
        before = row_counts()
        problem = assert_problem(owner_client.post(URL, body, format="json"), status, "invalid")
        assert field in problem["errors"]
        assert row_counts() == before

    def test_already_a_member_is_409(self, owner_client, tenant_a):
        body = {"username": "carol", "role": "developer", "password": "a-long-unusual-passphrase"}
        assert owner_client.post(URL, body, format="json").status_code == 201
        before = row_counts()
        assert_problem(owner_client.post(URL, {**body, "role": "admin"}, format="json"), 409)
        assert row_counts() == before
        assert Membership.objects.get(user__username="carol@acme").role == Role.DEVELOPER

    def test_only_an_owner_adds_an_owner(self, client_with_role, owner_client):
        body = {"username": "erin", "role": "owner", "password": "a-long-unusual-passphrase"}
        before = row_counts()
        assert_problem(client_with_role(Role.ADMIN).post(URL, body, format="json"), 403)
        assert row_counts()["members"] == before["members"] + 1  # only the admin fixture itself
        assert owner_client.post(URL, body, format="json").status_code == 201


@pytest.mark.django_db
class TestChangeRole:
    def test_admin_promotes_a_developer(self, client_with_role, member):
        resp = client_with_role(Role.ADMIN).patch(detail(member), {"role": "admin"}, format="json")
        assert resp.status_code == 200, resp.content
        assert resp.json()["role"] == "admin"
        assert Membership.objects.get(pk=member.pk).role == Role.ADMIN
        event = AuditEvent.objects.get(action="member.role")
        assert (event.data["from"], event.data["to"]) == ("developer", "admin")

    @pytest.mark.parametrize(
        ("body", "field"),
        [({"role": "emperor"}, "role"), ({}, "role"), ({"role": "admin", "username": "x"}, "username")],
        ids=["bad-role", "missing-role", "unknown-field"],
    )
    def test_bad_input(self, owner_client, member, body, field):
        before = row_counts()
        problem = assert_problem(owner_client.patch(detail(member), body, format="json"), 400)
        assert field in problem["errors"]
        assert row_counts() == before

    def test_admin_cannot_touch_the_owner_role(self, client_with_role, owner, member):
        admin = client_with_role(Role.ADMIN)
        assert_problem(admin.patch(detail(member), {"role": "owner"}, format="json"), 403)
        assert_problem(admin.patch(detail(owner), {"role": "viewer"}, format="json"), 403)
        assert Membership.objects.get(pk=owner.pk).role == Role.OWNER
        assert Membership.objects.get(pk=member.pk).role == Role.DEVELOPER

    def test_last_owner_cannot_step_down(self, owner_client, owner):
        before = row_counts()
        assert_problem(owner_client.patch(detail(owner), {"role": "admin"}, format="json"), 409)
        assert Membership.objects.get(pk=owner.pk).role == Role.OWNER
        assert row_counts() == before

    def test_an_owner_can_step_down_when_another_remains(self, owner_client, owner, member):
        assert owner_client.patch(detail(member), {"role": "owner"}, format="json").status_code == 200
        assert owner_client.patch(detail(owner), {"role": "viewer"}, format="json").status_code == 200
        assert Membership.objects.get(pk=owner.pk).role == Role.VIEWER


@pytest.mark.django_db
class TestRemove:
    def test_remove_revokes_the_members_tokens(self, owner_client, member_client, member):
        assert member_client.get("/api/v1/tenant").status_code == 200
        resp = owner_client.delete(detail(member))
        assert resp.status_code == 204, resp.content
        assert not Membership.objects.filter(pk=member.pk).exists()
        assert User.objects.filter(username="bob").exists()  # the account stays, the membership goes
        assert_problem(member_client.get("/api/v1/tenant"), 401)
        assert AuditEvent.objects.filter(action="member.remove", object_id=str(member.pk)).exists()

    def test_last_owner_cannot_be_removed(self, owner_client, owner):
        before = row_counts()
        assert_problem(owner_client.delete(detail(owner)), 409)
        assert row_counts() == before

    def test_admin_cannot_remove_an_owner(self, client_with_role, owner, member):
        MembershipFactory(tenant=owner.tenant, role=Role.OWNER)  # not the last owner
        before = row_counts()
        admin = client_with_role(Role.ADMIN)
        assert_problem(admin.delete(detail(owner)), 403)
        assert row_counts()["members"] == before["members"] + 1
        assert admin.delete(detail(member)).status_code == 204

    def test_unknown_member_is_404(self, owner_client):
        assert_problem(owner_client.delete(f"{URL}/00000000-0000-0000-0000-000000000000"), 404)
        assert_problem(owner_client.delete(f"{URL}/not-a-uuid"), 404)

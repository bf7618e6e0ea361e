"""/api/v1/tokens: list, create (secret shown once), revoke; admins and owners only."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.tenants.models import ApiToken, Role, token_digest
from tests.api.conftest import assert_problem, count_queries, row_counts
from tests.factories import MembershipFactory

URL = "/api/v1/tokens"


def _use(secret: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client.get("/api/v1/tenant").status_code


@pytest.mark.django_db
class TestCreate:
    def test_secret_is_shown_once(self, owner_client, owner):
        resp = owner_client.post(URL, {"name": "ci", "expires_in_days": 7}, format="json")
        assert resp.status_code == 201, resp.content
        body = resp.json()
        secret = body["token"]
        assert secret.startswith("bsn_") and body["prefix"] == secret[4:12]
        token = ApiToken.objects.get(pk=body["id"])
        assert token.membership == owner
        assert token.digest == token_digest(secret)
        assert timedelta(days=6, hours=23) < token.expires_at - timezone.now() <= timedelta(days=7)
        assert _use(secret) == 200
        # Never again: not in the list, not in the detail, not in the audit log.
        listing = owner_client.get(URL).content.decode()
        detail = owner_client.get(f"{URL}/{token.pk}").content.decode()
        for text in (listing, detail, json.dumps(list(AuditEvent.objects.values("data")), default=str)):
            assert secret not in text
        assert "token" not in owner_client.get(f"{URL}/{token.pk}").json()
        assert AuditEvent.objects.filter(action="token.create", object_id=str(token.pk)).count() == 1

    def test_default_lifetime_comes_from_settings(self, owner_client, settings):
        body = owner_client.post(URL, {"name": "default"}, format="json").json()
        token = ApiToken.objects.get(pk=body["id"])
        assert (token.expires_at - timezone.now()).days == settings.BSN_TOKEN_TTL_DAYS - 1

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "name"),
            ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
            ({"name": "x", "expires_in_days": 3651}, "expires_in_days"),
            ({"name": "x", "expires_in_days": "soon"}, "expires_in_days"),
            ({"name": "x", "scopes": ["all"]}, "scopes"),
            ({"name": "x" * 101}, "name"),
        ],
        ids=["no-name", "zero-days", "too-long", "wrong-type", "unknown-field", "name-too-long"],
    )
    def test_bad_input_changes_nothing(self, owner_client, body, field):
        before = row_counts()
        problem = assert_problem(owner_client.post(URL, body, format="json"), 400, "invalid")
        assert field in problem["errors"]
        assert row_counts() == before


@pytest.mark.django_db
class TestListAndRevoke:
    def test_list_shows_the_tenants_tokens_without_secrets(self, owner_client, member_client, outsider_client):
        body = owner_client.get(URL).json()
        assert body["count"] == 2  # alice's and bob's test tokens; mallory's is tenant B's
        assert {row["username"] for row in body["results"]} == {"alice", "bob"}
        for row in body["results"]:
            assert "token" not in row and "digest" not in row

    def test_filters(self, owner_client, member_client):
        bob_token = ApiToken.objects.get(membership=member_client.membership)
        owner_client.delete(f"{URL}/{bob_token.pk}")
        assert [r["username"] for r in owner_client.get(URL, {"username": "bob"}).json()["results"]] == ["bob"]
        revoked = owner_client.get(URL, {"revoked": "true"}).json()["results"]
        assert [r["id"] for r in revoked] == [str(bob_token.pk)]
        assert revoked[0]["is_usable"] is False
        live = owner_client.get(URL, {"revoked": "false"}).json()["results"]
        assert str(bob_token.pk) not in {r["id"] for r in live}
        assert owner_client.get(URL, {"name": "nope"}).json()["count"] == 0

    def test_revoke(self, owner_client, member_client):
        token = ApiToken.objects.get(membership=member_client.membership)
        resp = owner_client.delete(f"{URL}/{token.pk}")
        assert resp.status_code == 204
        token.refresh_from_db()
        assert token.revoked_at is not None
        assert_problem(member_client.get("/api/v1/tenant"), 401)
        revoked_at = token.revoked_at
        assert owner_client.delete(f"{URL}/{token.pk}").status_code == 204  # idempotent
        token.refresh_from_db()
        assert token.revoked_at == revoked_at
        assert AuditEvent.objects.filter(action="token.revoke", object_id=str(token.pk)).count() == 1

    def test_expired_token_is_listed_as_unusable(self, owner_client, member_client):
        ApiToken.objects.filter(membership=member_client.membership).update(
            expires_at=timezone.now() - timedelta(days=1)
        )
        rows = {r["username"]: r for r in owner_client.get(URL).json()["results"]}
        assert rows["bob"]["is_usable"] is False
        assert rows["alice"]["is_usable"] is True

    def test_unknown_token_is_404(self, owner_client):
        assert_problem(owner_client.delete(f"{URL}/00000000-0000-0000-0000-000000000000"), 404)

    def test_list_query_count_does_not_grow_with_rows(self, owner_client, owner, tenant_a):
        from apps.tenants.services import token_issue

        owner_client.get(URL)  # warm-up: records the token's first use
        few = count_queries(owner_client, URL)
        for _ in range(8):
            token_issue(membership=MembershipFactory(tenant=tenant_a, role=Role.VIEWER), name="more")
        assert count_queries(owner_client, URL) == few


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEVELOPER])
def test_tokens_need_admin(client_with_role, owner, role):
    client = client_with_role(role)
    target = ApiToken.objects.get(membership=client.membership)
    before = row_counts()
    assert_problem(client.get(URL), 403, "permission-denied")
    assert_problem(client.get(f"{URL}/{target.pk}"), 403)
    assert_problem(client.post(URL, {"name": "x"}, format="json"), 403)
    assert_problem(client.delete(f"{URL}/{target.pk}"), 403)
    assert row_counts() == before
    assert ApiToken.objects.get(pk=target.pk).revoked_at is None

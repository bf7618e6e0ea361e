"""POST /api/v1/auth/login and /logout, and how tokens authenticate (expiry, revocation)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.tenants.models import ApiToken, Role, Tenant, token_digest
from tests.api.conftest import assert_problem, row_counts
from tests.factories import MembershipFactory, TenantFactory

PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory
LOGIN = "/api/v1/auth/login"


def _bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client


@pytest.mark.django_db
class TestLogin:
    def test_username_and_password_give_a_working_token(self, owner):
        resp = APIClient().post(LOGIN, {"username": "alice", "password": PASSWORD}, format="json")
        assert resp.status_code == 201, resp.content
        body = resp.json()
        assert body["token"].startswith("bsn_")
        assert body["username"] == "alice"
        assert body["is_usable"] is True
        stored = ApiToken.objects.get(pk=body["id"])
        assert stored.membership == owner
        assert stored.digest == token_digest(body["token"])  # only the digest is kept
        assert body["token"] not in (stored.digest, stored.prefix)
        tenant = _bearer(body["token"]).get("/api/v1/tenant")
        assert tenant.status_code == 200
        assert tenant.json()["slug"] == "acme"

    def test_bearer_keyword_works_too(self, owner):
        secret = APIClient().post(LOGIN, {"username": "alice", "password": PASSWORD}, format="json").json()["token"]
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        assert client.get("/api/v1/tenant").status_code == 200

    @pytest.mark.parametrize(
        "credentials",
        [{"username": "alice", "password": "wrong"}, {"username": "nobody", "password": PASSWORD}],
        ids=["wrong-password", "unknown-user"],
    )
    def test_wrong_credentials_are_401_and_issue_nothing(self, owner, credentials):
        before = row_counts()
        resp = APIClient().post(LOGIN, credentials, format="json")
        body = assert_problem(resp, 401, "authentication-failed")
        assert "password" in body["detail"]
        assert resp["WWW-Authenticate"].startswith("Token")
        assert row_counts() == before

    def test_inactive_user_cannot_log_in(self, owner):
        owner.user.is_active = False
        owner.user.save()
        assert_problem(APIClient().post(LOGIN, {"username": "alice", "password": PASSWORD}, format="json"), 401)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"username": "alice"}, "password"),
            ({"password": PASSWORD}, "username"),
            ({"username": "alice", "password": PASSWORD, "remember": True}, "remember"),
            ({"username": ["alice"], "password": PASSWORD}, "username"),
        ],
        ids=["no-password", "no-username", "unknown-field", "wrong-type"],
    )
    def test_bad_input_is_400(self, owner, body, field):
        before = row_counts()
        problem = assert_problem(APIClient().post(LOGIN, body, format="json"), 400, "invalid")
        assert field in problem["errors"]
        assert row_counts() == before

    def test_user_of_several_tenants_must_name_one(self, owner):
        other = TenantFactory(slug="initech")
        MembershipFactory(tenant=other, user=owner.user, role=Role.VIEWER)
        body = {"username": "alice", "password": PASSWORD}
        problem = assert_problem(APIClient().post(LOGIN, body, format="json"), 400)
        assert "tenant" in problem["errors"]
        resp = APIClient().post(LOGIN, {**body, "tenant": "initech"}, format="json")
        assert resp.status_code == 201
        tenant = _bearer(resp.json()["token"]).get("/api/v1/tenant").json()
        assert (tenant["slug"], tenant["role"]) == ("initech", "viewer")

    def test_user_without_an_active_tenant_is_refused_like_a_wrong_password(self, owner):
        Tenant.objects.filter(pk=owner.tenant_id).update(is_active=False)
        body = {"username": "alice", "password": PASSWORD}
        assert_problem(APIClient().post(LOGIN, body, format="json"), 401, "authentication-failed")


@pytest.mark.django_db
class TestLogout:
    @pytest.mark.parametrize("role", list(Role))
    def test_logout_revokes_the_callers_token(self, client_with_role, role):
        client = client_with_role(role)
        assert client.get("/api/v1/tenant").status_code == 200
        resp = client.post("/api/v1/auth/logout")
        assert resp.status_code == 204, resp.content
        token = ApiToken.objects.get(membership=client.membership)
        assert token.revoked_at is not None
        assert_problem(client.get("/api/v1/tenant"), 401)

    def test_logout_leaves_other_tokens_alone(self, owner_client, member_client):
        owner_client.post("/api/v1/auth/logout")
        assert member_client.get("/api/v1/tenant").status_code == 200

    def test_logout_needs_a_token(self, db):
        assert_problem(APIClient().post("/api/v1/auth/logout"), 401)


@pytest.mark.django_db
class TestTokenAuthentication:
    def test_no_credentials_is_401_with_challenge(self, owner):
        resp = APIClient().get("/api/v1/apps")
        assert_problem(resp, 401, "not-authenticated")
        assert resp["WWW-Authenticate"] == 'Token realm="api"'

    @pytest.mark.parametrize(
        "header",
        ["Token bsn_not-a-real-secret", "Token", "Token two parts", "Bearer \xff"],
        ids=["unknown", "missing-secret", "too-many-parts", "non-ascii"],
    )
    def test_bad_tokens_are_401(self, owner, header):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        assert_problem(client.get("/api/v1/tenant"), 401)

    def test_revoked_token_is_401(self, owner_client):
        ApiToken.objects.filter(membership=owner_client.membership).update(revoked_at=timezone.now())
        assert_problem(owner_client.get("/api/v1/tenant"), 401, "authentication-failed")

    def test_expired_token_is_401(self, owner_client):
        ApiToken.objects.filter(membership=owner_client.membership).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
        assert_problem(owner_client.get("/api/v1/tenant"), 401, "authentication-failed")

    def test_token_of_an_inactive_tenant_is_401(self, owner_client):
        Tenant.objects.filter(pk=owner_client.membership.tenant_id).update(is_active=False)
        assert_problem(owner_client.get("/api/v1/tenant"), 401)

    def test_token_of_an_inactive_user_is_401(self, owner_client):
        user = owner_client.membership.user
        user.is_active = False
        user.save()
        assert_problem(owner_client.get("/api/v1/tenant"), 401)

    def test_use_is_recorded(self, owner_client):
        assert ApiToken.objects.get(membership=owner_client.membership).last_used_at is None
        owner_client.get("/api/v1/tenant")
        assert ApiToken.objects.get(membership=owner_client.membership).last_used_at is not None

"""Log-in and accounts as an attacker tries them (issue 8 §5).

Password guessing is throttled per client address and per username on the API and the
Django admin; the platform's own accounts answer like a wrong password; a tenant admin
can neither attach nor detect accounts outside their tenant; usernames are ASCII; tokens
have a maximum lifetime and log-ins do not pile them up.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils import timezone
from rest_framework.test import APIClient

from apps.tenants.models import ApiToken, Membership
from tests.api.conftest import assert_problem
from tests.factories import MembershipFactory, TenantFactory

PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory
LOGIN = "/api/v1/auth/login"
User = get_user_model()


def _login(username: str, password: str, address: str = "203.0.113.7", **extra):
    client = APIClient(REMOTE_ADDR=address)
    return client.post(LOGIN, {"username": username, "password": password, **extra}, format="json")


def _comparable(resp) -> tuple:
    """Everything a client can see of an answer (the instance path included)."""
    headers = {k: v for k, v in resp.items() if k.lower() not in {"date"}}
    return resp.status_code, headers, resp.content


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser("root", "root@example.test", "platform-operator-passphrase")


@pytest.mark.django_db
class TestNoTenantAnswersLikeAWrongPassword:
    def test_superuser_right_password_is_indistinguishable(self, superuser, owner):
        right = _login("root", "platform-operator-passphrase", address="198.51.100.1")
        wrong = _login("root", "not-the-passphrase", address="198.51.100.2")
        unknown = _login("nobody-at-all", "whatever-it-is", address="198.51.100.3")
        assert_problem(right, 401, "authentication-failed")
        assert _comparable(right) == _comparable(wrong) == _comparable(unknown)
        assert not ApiToken.objects.filter(membership__user=superuser).exists()

    def test_removed_member_and_foreign_tenant_name_answer_alike(self, owner, outsider):
        Membership.objects.filter(pk=owner.pk).delete()  # alice's account stays, in no tenant
        removed = _login("alice", PASSWORD, address="198.51.100.4")
        foreign = _login("mallory", PASSWORD, address="198.51.100.5", tenant="acme")  # not her tenant
        wrong = _login("mallory", "wrong-password", address="198.51.100.6")
        assert _comparable(removed) == _comparable(foreign) == _comparable(wrong)
        assert removed.status_code == 401

    def test_the_right_password_of_a_tenantless_account_counts_as_a_failure(self, superuser, settings):
        settings.AXES_FAILURE_LIMIT = 3
        statuses = [
            _login("root", "platform-operator-passphrase", address=f"198.51.100.{i}").status_code for i in range(5)
        ]
        assert statuses == [401, 401, 429, 429, 429]


@pytest.mark.django_db
class TestApiLoginThrottle:
    def test_one_address_guessing_many_usernames_is_locked_out(self, owner, settings):
        limit = settings.AXES_FAILURE_LIMIT
        for i in range(limit - 1):
            assert _login(f"guess{i}", "password123").status_code == 401
        locked = _login(f"guess{limit}", "password123")
        assert_problem(locked, 429, "login-locked")
        assert int(locked["Retry-After"]) == int(settings.AXES_COOLOFF_TIME.total_seconds())
        # Locked means locked: the right password from that address is refused too,
        # and no token is issued.
        before = ApiToken.objects.count()
        assert _login("alice", PASSWORD).status_code == 429
        assert ApiToken.objects.count() == before
        # Another address is not affected.
        assert _login("alice", PASSWORD, address="192.0.2.55").status_code == 201

    def test_one_username_guessed_from_many_addresses_is_locked_out(self, owner, settings):
        limit = settings.AXES_FAILURE_LIMIT
        statuses = [_login("alice", f"guess-{i}", address=f"192.0.2.{i}").status_code for i in range(limit + 1)]
        assert statuses == [401] * (limit - 1) + [429, 429]
        # alice's right password from a fresh address waits for the cool-off as well.
        resp = _login("alice", PASSWORD, address="192.0.2.200")
        assert_problem(resp, 429, "login-locked")
        assert resp["Retry-After"]
        # Other users are not affected.
        MembershipFactory(tenant=owner.tenant, user__username="carol")
        assert _login("carol", PASSWORD, address="192.0.2.201").status_code == 201

    def test_after_the_cool_off_the_right_password_works_again(self, owner, settings):
        for i in range(settings.AXES_FAILURE_LIMIT):
            _login("alice", f"guess-{i}")
        assert _login("alice", PASSWORD).status_code == 429
        # The cool-off counts from the last failure: move the failures into the past.
        past = timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
        AccessAttempt.objects.update(attempt_time=past)
        assert _login("alice", PASSWORD).status_code == 201

    def test_logging_in_to_ones_own_account_does_not_reset_the_count(self, owner, settings):
        # An attacker with an account of their own cannot interleave good log-ins to keep
        # guessing other usernames from one address.
        settings.AXES_FAILURE_LIMIT = 3
        assert _login("victim1", "guess").status_code == 401
        assert _login("victim2", "guess").status_code == 401
        assert _login("alice", PASSWORD).status_code == 201
        assert _login("victim3", "guess").status_code == 429

    def test_forwarded_for_is_ignored_unless_a_proxy_is_trusted(self, owner, settings):
        settings.AXES_FAILURE_LIMIT = 2
        forged = [
            APIClient(REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR=f"10.9.9.{i}")
            .post(LOGIN, {"username": f"g{i}", "password": "x"}, format="json")
            .status_code
            for i in range(3)
        ]
        assert forged == [401, 429, 429]  # a header the client chose does not give it new addresses

    def test_behind_one_trusted_proxy_each_client_counts_apart(self, owner, settings):
        settings.AXES_FAILURE_LIMIT = 2
        settings.BSN_TRUSTED_PROXY_COUNT = 1

        def via_proxy(client_address: str, username: str, password: str) -> int:
            client = APIClient(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=f"6.6.6.6, {client_address}")
            return client.post(LOGIN, {"username": username, "password": password}, format="json").status_code

        assert [via_proxy("192.0.2.1", f"g{i}", "x") for i in range(3)] == [401, 429, 429]
        assert via_proxy("192.0.2.2", "alice", PASSWORD) == 201


@pytest.mark.django_db
class TestAdminLoginThrottle:
    def test_admin_password_guessing_is_locked_out(self, client, superuser, settings):
        limit = settings.AXES_FAILURE_LIMIT
        url = "/admin/login/?next=/admin/"
        statuses = []
        for i in range(limit):
            statuses.append(
                client.post(url, {"username": "root", "password": f"guess-{i}"}, REMOTE_ADDR="203.0.113.20").status_code
            )
        assert statuses == [200] * (limit - 1) + [429]  # 200: the form again, with an error
        locked = client.post(url, {"username": "root", "password": "platform-operator-passphrase"})
        assert locked.status_code == 429
        assert int(locked["Retry-After"]) > 0
        assert "_auth_user_id" not in client.session

    def test_admin_logs_in_below_the_limit(self, client, superuser):
        resp = client.post(
            "/admin/login/?next=/admin/", {"username": "root", "password": "platform-operator-passphrase"}
        )
        assert resp.status_code == 302
        assert client.session["_auth_user_id"] == str(superuser.pk)


@pytest.mark.django_db
class TestTenantAdminsAndAccounts:
    URL = "/api/v1/tenant/members"

    @pytest.mark.parametrize(
        "name", ["mallory", "root", "dave", "zed"], ids=["other-tenant", "superuser", "tenantless", "new"]
    )
    def test_existing_accounts_are_never_attached_nor_revealed(self, owner_client, outsider, superuser, name):
        User.objects.create_user("dave", password="daves-own-passphrase")
        before = {
            u.username: (u.password, list(u.memberships.values_list("tenant__slug", flat=True)))
            for u in User.objects.all()
        }
        body = {"username": name, "role": "admin", "password": "a-long-unusual-passphrase"}
        resp = owner_client.post(self.URL, body, format="json")
        # The same answer whether the name exists elsewhere or nowhere: a new account
        # in acme's namespace.
        assert resp.status_code == 201, resp.content
        assert resp.json()["username"] == f"{name}@acme"
        after = {
            u.username: (u.password, list(u.memberships.values_list("tenant__slug", flat=True)))
            for u in User.objects.all()
        }
        assert after.pop(f"{name}@acme")[1] == ["acme"]
        assert after == before  # nobody else's password or memberships changed
        # The attached-looking name does not log in to the stranger's account either.
        assert _login(name, "a-long-unusual-passphrase", address="198.51.100.77").status_code == 401

    def test_the_superuser_cannot_be_pulled_into_a_tenant(self, owner_client, superuser):
        owner_client.post(
            self.URL, {"username": "root", "role": "owner", "password": "a-long-unusual-passphrase"}, format="json"
        )
        assert not Membership.objects.filter(user=superuser).exists()

    def test_answers_do_not_depend_on_other_tenants_accounts(self, owner_client, outsider):
        # A name taken in globex and one that exists nowhere: same status, same shape.
        body = {"role": "viewer", "password": "a-long-unusual-passphrase"}
        taken = owner_client.post(self.URL, {**body, "username": "mallory"}, format="json")
        free = owner_client.post(self.URL, {**body, "username": "nobody"}, format="json")
        assert (taken.status_code, sorted(taken.json())) == (free.status_code, sorted(free.json()))

    def test_look_alike_usernames_are_refused_everywhere(self, db):
        User(username="admin2", password="x").full_clean()
        with pytest.raises(ValidationError) as exc:
            User(username="\u0430dmin", password="x").full_clean()  # Cyrillic а: admin form, createsuperuser
        assert set(exc.value.message_dict) == {"username"}


@pytest.mark.django_db
class TestTokenLifetimeAndCount:
    def test_lifetime_has_a_configured_maximum(self, owner_client, settings):
        settings.BSN_TOKEN_MAX_TTL_DAYS = 30
        problem = assert_problem(
            owner_client.post("/api/v1/tokens", {"name": "forever", "expires_in_days": 31}, format="json"), 400
        )
        assert "expires_in_days" in problem["errors"]
        ok = owner_client.post("/api/v1/tokens", {"name": "month", "expires_in_days": 30}, format="json")
        assert ok.status_code == 201

    def test_lowering_the_maximum_ends_older_tokens(self, owner_client, settings):
        long_lived = owner_client.post("/api/v1/tokens", {"name": "ci", "expires_in_days": 300}, format="json").json()
        ApiToken.objects.filter(pk=long_lived["id"]).update(created_at=timezone.now() - timedelta(days=40))
        settings.BSN_TOKEN_MAX_TTL_DAYS = 30
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {long_lived['token']}")
        assert_problem(client.get("/api/v1/tenant"), 401)
        assert owner_client.get(f"/api/v1/tokens/{long_lived['id']}").json()["is_usable"] is False

    def test_login_tokens_are_short_lived_and_capped(self, owner, settings):
        settings.BSN_LOGIN_TOKENS_MAX = 3
        secrets = [_login("alice", PASSWORD).json()["token"] for _ in range(6)]
        usable = ApiToken.objects.usable().filter(membership=owner, name="login")
        assert usable.count() == 3
        lifetime = usable.first().expires_at - timezone.now()
        assert lifetime <= timedelta(days=settings.BSN_LOGIN_TOKEN_TTL_DAYS)
        # The newest three work, the older three were revoked.
        codes = []
        for secret in secrets:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
            codes.append(client.get("/api/v1/tenant").status_code)
        assert codes == [401, 401, 401, 200, 200, 200]

    def test_login_tokens_of_another_membership_are_left_alone(self, owner, settings):
        settings.BSN_LOGIN_TOKENS_MAX = 1
        other = TenantFactory(slug="initech")
        MembershipFactory(tenant=other, user=owner.user)
        _login("alice", PASSWORD, tenant="acme")
        _login("alice", PASSWORD, tenant="initech")
        assert ApiToken.objects.usable().filter(membership__user=owner.user, name="login").count() == 2

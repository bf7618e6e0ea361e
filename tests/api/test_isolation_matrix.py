"""Tenant isolation: walk every operation of the OpenAPI schema as tenant B's owner against tenant A.

Every route must be classified below. A route the table does not know fails the test, so
nobody adds an endpoint without deciding how it is scoped.
"""

from __future__ import annotations

import json
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.audit.api import AuditEventViewSet
from apps.audit.models import AuditEvent
from apps.chainapps.api.views import AppViewSet, FrameworkViewSet, OperationViewSet
from apps.chainapps.models import ChainApp, LedgerNode, Operation
from apps.gateway.api.views import AppLedgerViewSet, AppUserViewSet
from apps.gateway.models import AppUser
from apps.regions.api.views import RegionViewSet
from apps.regions.models import Region
from apps.tenants.api.views import LoginView, LogoutView, MemberViewSet, TenantView, TokenViewSet
from apps.tenants.models import ApiToken, Membership
from apps.tenants.services import token_issue
from bsn.client import generate_key
from tests.api.conftest import assert_problem, make_app
from tests.fakenode import FakeNode

# kind, resource. Kinds:
#   catalogue  platform-wide (regions, frameworks): readable by every tenant, writable by none
#   login      anonymous; issues a token for the caller's own membership
#   self       acts on the caller's own token / tenant
#   list       tenant-scoped collection: must contain none of A's objects
#   create     tenant-scoped create: the new object is the caller's tenant's
#   object     one tenant-scoped object: A's id must be a 404 indistinguishable from a random id
#              (``{id}`` or ``{app_id}`` is the object; other path parameters get valid values)
#   app-child  an object under an app (``{app_id}`` + ``{id}``): A's object is a 404 under A's
#              app, under B's own app and under a random app, all indistinguishable
ROUTES: dict[tuple[str, str], tuple[str, str | None]] = {
    ("post", "/api/v1/auth/login"): ("login", None),
    ("post", "/api/v1/auth/logout"): ("self", None),
    ("get", "/api/v1/tenant"): ("self", None),
    ("get", "/api/v1/regions/"): ("catalogue", None),
    ("get", "/api/v1/regions/{code}/"): ("catalogue", None),
    ("get", "/api/v1/frameworks/"): ("catalogue", None),
    ("get", "/api/v1/frameworks/{slug}/"): ("catalogue", None),
    ("get", "/api/v1/tenant/members/"): ("list", "member"),
    ("post", "/api/v1/tenant/members/"): ("create", "member"),
    ("get", "/api/v1/tenant/members/{id}/"): ("object", "member"),
    ("patch", "/api/v1/tenant/members/{id}/"): ("object", "member"),
    ("delete", "/api/v1/tenant/members/{id}/"): ("object", "member"),
    ("get", "/api/v1/tokens/"): ("list", "token"),
    ("post", "/api/v1/tokens/"): ("create", "token"),
    ("get", "/api/v1/tokens/{id}/"): ("object", "token"),
    ("delete", "/api/v1/tokens/{id}/"): ("object", "token"),
    ("get", "/api/v1/apps/"): ("list", "app"),
    ("post", "/api/v1/apps/"): ("create", "app"),
    ("get", "/api/v1/apps/{id}/"): ("object", "app"),
    ("patch", "/api/v1/apps/{id}/"): ("object", "app"),
    ("delete", "/api/v1/apps/{id}/"): ("object", "app"),
    ("get", "/api/v1/apps/{id}/nodes/"): ("object", "app"),
    ("post", "/api/v1/apps/{id}/start/"): ("object", "app"),
    ("post", "/api/v1/apps/{id}/stop/"): ("object", "app"),
    ("post", "/api/v1/apps/{id}/transactions/"): ("object", "app"),
    ("get", "/api/v1/apps/{id}/transactions/{tx_id}/"): ("object", "app"),
    ("get", "/api/v1/apps/{id}/blocks/{height}/"): ("object", "app"),
    ("get", "/api/v1/apps/{id}/state/{contract}/{key}/"): ("object", "app"),
    ("get", "/api/v1/apps/{id}/state/{key}/"): ("object", "app"),
    ("get", "/api/v1/apps/{id}/chain/"): ("object", "app"),
    ("get", "/api/v1/apps/{app_id}/users/"): ("object", "app"),
    ("post", "/api/v1/apps/{app_id}/users/"): ("object", "app"),
    ("get", "/api/v1/apps/{app_id}/users/{id}/"): ("app-child", "appuser"),
    ("delete", "/api/v1/apps/{app_id}/users/{id}/"): ("app-child", "appuser"),
    ("get", "/api/v1/operations/"): ("list", "operation"),
    ("get", "/api/v1/operations/{id}/"): ("object", "operation"),
    ("get", "/api/v1/audit-events/"): ("list", "event"),
    ("get", "/api/v1/audit-events/{id}/"): ("object", "event"),
}

# Every view class mounted under /api/v1/. A plain Django view or a view left out of the
# schema would escape the walk below; this makes adding one a conscious decision.
API_VIEWS = {
    LoginView,
    LogoutView,
    TenantView,
    MemberViewSet,
    TokenViewSet,
    RegionViewSet,
    FrameworkViewSet,
    AppViewSet,
    AppLedgerViewSet,
    AppUserViewSet,
    OperationViewSet,
    AuditEventViewSet,
    SpectacularAPIView,
    SpectacularSwaggerView,
}

# Valid bodies, so that only scoping can be the reason for a refusal.
BODIES = {
    ("patch", "member"): {"role": "viewer"},
    ("patch", "app"): {"name": "pwned", "description": "pwned"},
    ("post", "member"): {"username": "b-newcomer", "role": "viewer", "password": "a-long-unusual-passphrase"},
    ("post", "token"): {"name": "b-token"},
    # The same name as A's app: names are per tenant, so A's app must not collide (or show).
    ("post", "app"): {"name": "ledger-a", "regions": ["cn-beijing"]},
}

# Bodies for routes whose (method, resource) pair has another body above.
PATH_BODIES = {
    ("post", "/api/v1/apps/{app_id}/users/"): lambda a: {"name": "b-user", "public_key": generate_key()[1]},
    ("post", "/api/v1/apps/{id}/transactions/"): lambda a: {
        "tx": {
            "app": str(a["app"]),
            "contract": "kv",
            "function": "put",
            "args": {"key": "k", "value": "v"},
            "signer": "alice-user",
            "nonce": "n1",
            "timestamp": 1764000000000,
        },
        "sig": "AAAA",
    },
}
# Values for path parameters that do not name the object under test.
PATH_PARAMS = {"{tx_id}": "ab" * 32, "{height}": "1", "{contract}": "kv", "{key}": "greeting"}

# List filters that name an object: pointing them at A's objects must find nothing.
REFERENCE_FILTERS = {"app": "app", "object_id": "app", "username": "username", "name": "app_name"}


def _api_views(patterns, prefix: str = ""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _api_views(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and route.startswith("api/v1/"):
            callback = pattern.callback
            yield route, getattr(callback, "cls", None) or getattr(callback, "view_class", None) or callback


def _snapshot(tenant) -> dict:
    """Every row of tenant A, field by field."""

    def rows(queryset):
        return json.dumps(list(queryset.order_by("pk").values()), default=str, sort_keys=True)

    return {
        "apps": rows(ChainApp.objects.filter(tenant=tenant)),
        "nodes": rows(LedgerNode.objects.filter(app__tenant=tenant)),
        "operations": rows(Operation.objects.filter(tenant=tenant)),
        "members": rows(Membership.objects.filter(tenant=tenant)),
        "tokens": rows(ApiToken.objects.filter(membership__tenant=tenant)),
        "audit": rows(AuditEvent.objects.filter(tenant=tenant)),
        "appusers": rows(AppUser.objects.filter(app__tenant=tenant)),
    }


def _without_instance(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "instance"}


def _fill(path: str, **objects) -> str:
    for name, value in {**PATH_PARAMS, **{f"{{{k}}}": str(v) for k, v in objects.items()}}.items():
        path = path.replace(name, value)
    return path


@pytest.fixture
def a_node():
    """A node stand-in behind tenant A's app: B's calls must never reach it."""
    node = FakeNode(lambda method, path, body: (200, {"status": "ok"}))
    yield node
    node.close()


@pytest.fixture
def world(owner, member, owner_client, outsider, app_a, regions, a_node):
    """Tenant A with an app, nodes, users, operations, members, tokens and audit events; B with its own app."""
    owner_client.post(f"/api/v1/apps/{app_a.pk}/stop")  # an open operation
    b_app = make_app(outsider, "b-app", regions=("cn-shanghai",))
    LedgerNode.objects.filter(app=app_a).update(state=LedgerNode.State.RUNNING, endpoint=a_node.endpoint)
    a_user = AppUser.objects.create(
        app=app_a, name="alice-user", public_key=generate_key()[1], status=AppUser.Status.ACTIVE
    )
    a = {
        "b_app": b_app.pk,
        "appuser": a_user.pk,
        "tenant": owner.tenant,
        "app": app_a.pk,
        "app_name": app_a.name,
        "operation": Operation.objects.filter(app=app_a).first().pk,
        "member": member.pk,
        "token": token_issue(membership=member, name="bob's").token.pk,
        "event": AuditEvent.objects.filter(tenant=owner.tenant).first().pk,
        "username": "bob",
    }
    secrets = {
        str(v)
        for v in (
            *ChainApp.objects.filter(tenant=owner.tenant).values_list("pk", flat=True),
            *LedgerNode.objects.filter(app__tenant=owner.tenant).values_list("pk", flat=True),
            *LedgerNode.objects.filter(app__tenant=owner.tenant).values_list("name", flat=True),
            *Operation.objects.filter(tenant=owner.tenant).values_list("pk", flat=True),
            *Membership.objects.filter(tenant=owner.tenant).values_list("pk", flat=True),
            *ApiToken.objects.filter(membership__tenant=owner.tenant).values_list("pk", flat=True),
            *ApiToken.objects.filter(membership__tenant=owner.tenant).values_list("prefix", flat=True),
            *AuditEvent.objects.filter(tenant=owner.tenant).values_list("pk", flat=True),
            *AppUser.objects.filter(app__tenant=owner.tenant).values_list("pk", flat=True),
            *AppUser.objects.filter(app__tenant=owner.tenant).values_list("public_key", flat=True),
            app_a.admin_public_key,
            *LedgerNode.objects.filter(app__tenant=owner.tenant).values_list("public_key", flat=True),
            # Not A's event hashes: the audit chain is platform-wide, so B's first event after one
            # of A's carries its hash as prev_hash — an opaque chain position, no content, no handle
            # for any endpoint (docs/tenancy.md, "Audit chain").
            owner.tenant.pk,
            owner.tenant.slug,
            "alice",
            "bob",
        )
    }
    return a, secrets


@pytest.mark.django_db
def test_every_api_view_is_known():
    mounted = {view for _, view in _api_views(get_resolver().url_patterns)}
    assert mounted == API_VIEWS, f"unclassified: {mounted - API_VIEWS}, gone: {API_VIEWS - mounted}"


@pytest.mark.django_db
def test_outsider_cannot_read_write_or_detect_tenant_a(world, outsider_client, outsider, tenant_b, a_node):
    a, secrets = world
    schema = outsider_client.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operations = {(method, path): op for path, ops in schema["paths"].items() for method, op in ops.items()}
    unknown = sorted(set(operations) - set(ROUTES))
    assert not unknown, f"routes the isolation matrix cannot classify (add them to ROUTES): {unknown}"
    stale = sorted(set(ROUTES) - set(operations))
    assert not stale, f"ROUTES lists operations the schema no longer has: {stale}"

    before = _snapshot(a["tenant"])
    walked = []
    # logout last: it ends the outsider's session
    for (method, path), operation in sorted(operations.items(), key=lambda item: item[0][1] == "/api/v1/auth/logout"):
        kind, resource = ROUTES[(method, path)]
        call = getattr(outsider_client, method)
        body = PATH_BODIES[(method, path)](a) if (method, path) in PATH_BODIES else BODIES.get((method, resource))
        walked.append((method, path))

        if kind == "catalogue":
            url = path.replace("{code}", "cn-beijing").replace("{slug}", "bsn-ledger")
            assert call(url).status_code == 200, url
            for verb in ("post", "put", "patch", "delete"):
                if verb not in schema["paths"][path]:
                    assert_problem(getattr(outsider_client, verb)(url, {"status": "draining"}, format="json"), 405)

        elif kind == "login":
            resp = outsider_client.post(
                path, {"username": "mallory", "password": "correct-horse-battery"}, format="json"
            )
            assert resp.status_code == 201
            assert ApiToken.objects.get(pk=resp.json()["id"]).membership == outsider

        elif kind == "self":
            resp = call(path)
            assert resp.status_code in (200, 204), (method, path, resp.content)
            assert not any(secret in resp.content.decode() for secret in secrets), (method, path)

        elif kind == "list":
            params = [{}] + [
                {p["name"]: str(a[REFERENCE_FILTERS[p["name"]]])}
                for p in operation.get("parameters", [])
                if p["name"] in REFERENCE_FILTERS
            ]
            for query in params:
                resp = call(path, query)
                assert resp.status_code == 200, (path, query, resp.content)
                text = resp.content.decode()
                leaked = [secret for secret in secrets if secret in text]
                assert not leaked, (path, query, leaked)
                if query:
                    assert resp.json()["count"] == 0, (path, query)

        elif kind == "create":
            resp = call(path, body, format="json")
            assert resp.status_code in (201, 202), (path, resp.content)
            created = resp.json()
            if resource == "app":
                assert ChainApp.objects.get(pk=created["app"]).tenant == tenant_b
            elif resource == "member":
                assert Membership.objects.get(pk=created["id"]).tenant == tenant_b
                # and another tenant's user cannot be pulled in by name
                assert_problem(call(path, {"username": "bob", "role": "viewer"}, format="json"), 409)
            elif resource == "token":
                assert ApiToken.objects.get(pk=created["id"]).membership == outsider
            assert not any(secret in resp.content.decode() for secret in secrets), path

        elif kind == "object":
            target = _fill(path, id=a[resource], app_id=a[resource])
            nowhere = _fill(path, id=uuid.uuid4(), app_id=uuid.uuid4())
            theirs = assert_problem(call(target, body, format="json"), 404, "not-found")
            missing = assert_problem(call(nowhere, body, format="json"), 404, "not-found")
            assert _without_instance(theirs) == _without_instance(missing), path
            assert theirs["instance"] == target.split("?")[0]

        elif kind == "app-child":
            under_a = _fill(path, app_id=a["app"], id=a[resource])
            under_b = _fill(path, app_id=a["b_app"], id=a[resource])
            nowhere = _fill(path, app_id=uuid.uuid4(), id=uuid.uuid4())
            expected = _without_instance(assert_problem(call(nowhere, body, format="json"), 404, "not-found"))
            for target in (under_a, under_b):
                theirs = assert_problem(call(target, body, format="json"), 404, "not-found")
                assert _without_instance(theirs) == expected, target

        else:  # pragma: no cover - the ROUTES table only uses the kinds above
            pytest.fail(f"unknown kind {kind}")

    assert len(walked) == len(ROUTES)
    assert _snapshot(a["tenant"]) == before, "tenant A's rows changed while tenant B walked the API"
    assert a_node.requests == [], "a call for tenant A's app reached its node"


@pytest.mark.django_db
def test_catalogue_is_the_same_for_every_tenant(world, owner_client, outsider_client):
    for path in ("/api/v1/regions", "/api/v1/frameworks", "/api/v1/regions/cn-beijing"):
        assert owner_client.get(path).json() == outsider_client.get(path).json()
    assert Region.objects.count() == 3


@pytest.mark.django_db
def test_operation_filter_does_not_reveal_other_tenants_app_ids(world, outsider_client):
    a, _ = world
    theirs = outsider_client.get("/api/v1/operations", {"app": str(a["app"])})
    nowhere = outsider_client.get("/api/v1/operations", {"app": str(uuid.uuid4())})
    assert theirs.status_code == nowhere.status_code == 200
    assert theirs.json() == nowhere.json() == {"count": 0, "next": None, "previous": None, "results": []}

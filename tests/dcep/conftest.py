"""DCEP fixtures: the central bank, two operator banks, an enterprise, and a real tier-1 node.

The tier-1 chain app is created by the product (``tier1_provision``); its one node is the
real ledger program (``python -m bsn.ledger``, the ``dcep`` contract, solo ordering) run
as a subprocess on loopback with the environment the control plane builds for it, so
every issuance, withdrawal and settlement in these tests is a real signed transaction.
"""

from __future__ import annotations

import itertools
import uuid

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.chainapps.node_config import node_config
from apps.dcep.institutions import institution_ensure, tier1_provision, tier1_register_signer
from apps.dcep.models import Institution
from apps.regions.models import Region
from apps.tenants.models import Role, Tenant
from apps.tenants.services import token_issue
from tests.factories import MembershipFactory, RegionFactory
from tests.ledger.conftest import Node

_keys = itertools.count()


class Client:
    """An API client acting for one tenant, with an idempotency key per money call."""

    def __init__(self, membership):
        self.api = APIClient()
        issued = token_issue(membership=membership, name="dcep-test")
        self.api.credentials(HTTP_AUTHORIZATION=f"Token {issued.secret}")
        self.membership = membership
        self.tenant = membership.tenant

    def get(self, path, params=None):
        return self.api.get(f"/api/v1/dcep/{path}", params or {})

    def post(self, path, body=None, *, key: str | None = "auto"):
        headers = {}
        if key == "auto":
            key = f"k-{next(_keys)}-{uuid.uuid4().hex[:8]}"
        if key is not None:
            headers["HTTP_IDEMPOTENCY_KEY"] = key
        return self.api.post(f"/api/v1/dcep/{path}", body or {}, format="json", **headers)

    def patch(self, path, body, *, key: str | None = "auto"):
        headers = {"HTTP_IDEMPOTENCY_KEY": f"p-{next(_keys)}"} if key == "auto" else {}
        if key not in ("auto", None):
            headers["HTTP_IDEMPOTENCY_KEY"] = key
        return self.api.patch(f"/api/v1/dcep/{path}", body, format="json", **headers)


def _member(tenant, role=Role.OWNER):
    return MembershipFactory(tenant=tenant, role=role)


@pytest.fixture
def home_region(db):
    return RegionFactory(code="cn-beijing", name="Beijing", driver=Region.Driver.PROCESS)


@pytest.fixture
def institutions(db, home_region):
    ensure_builtin_framework(Framework)
    cb = institution_ensure(
        slug="pboc", name="Central Bank", kind=Institution.Kind.CENTRAL_BANK, home_region=home_region
    )
    a = institution_ensure(slug="bank-a", name="Bank A", kind=Institution.Kind.OPERATOR_BANK, home_region=home_region)
    b = institution_ensure(slug="bank-b", name="Bank B", kind=Institution.Kind.OPERATOR_BANK, home_region=home_region)
    return cb, a, b


def start_tier1_node(chain, tmp_path) -> Node:
    """Run the tier-1 app's node as the real ledger program and mark the app running."""
    node_row = LedgerNode.objects.select_related("app", "region").get(app=chain.app)
    env, secrets = node_config(node_row)
    env.update(BSN_APP_ID=str(chain.app_id), BSN_NODE_ID=str(node_row.pk))
    (tmp_path / "tier1-secrets").mkdir(mode=0o700)
    for name, value in secrets.items():  # as the drivers deliver them: files
        path = tmp_path / "tier1-secrets" / name.lower()
        path.write_text(value)
        env[f"{name}_FILE"] = str(path)
    node = Node(tmp_path / "tier1", **env)
    node.start()
    LedgerNode.objects.filter(pk=node_row.pk).update(
        state=LedgerNode.State.RUNNING, endpoint=f"http://127.0.0.1:{node.port}", last_seen_at=timezone.now()
    )
    Operation.objects.filter(app=chain.app).open().update(status=Operation.Status.SUCCEEDED)
    ChainApp.objects.filter(pk=chain.app_id).update(status=ChainApp.Status.RUNNING)
    chain.app.refresh_from_db()
    assert tier1_register_signer(chain)
    return node


@pytest.fixture
def tier1(institutions, home_region, tmp_path):
    """The tier-1 chain app with its real node running (stopped at the end)."""
    chain = tier1_provision(regions=[home_region])
    node = start_tier1_node(chain, tmp_path)
    yield chain, node
    if node.proc and node.proc.poll() is None:
        node.proc.kill()
        node.proc.wait()


@pytest.fixture
def enterprise(db):
    return Tenant.objects.create(slug="acme-corp", name="Acme Corp", kind=Tenant.Kind.ENTERPRISE)


@pytest.fixture
def clients(institutions, enterprise):
    cb, a, b = institutions
    stranger = Tenant.objects.create(slug="stranger", name="Stranger", kind=Tenant.Kind.ENTERPRISE)
    return {
        "cb": Client(_member(cb.tenant)),
        "a": Client(_member(a.tenant)),
        "b": Client(_member(b.tenant)),
        "corp": Client(_member(enterprise)),
        "stranger": Client(_member(stranger)),
        "a_viewer": Client(_member(a.tenant, Role.VIEWER)),
    }

"""An observation made before a delete step marked the node removed never brings it back
(the app read `deleting` for ever when a facts refresh raced the delete)."""

from __future__ import annotations

import pytest

from apps.chainapps import reconcile
from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.models import ChainApp, Framework, LedgerNode
from apps.chainapps.services import ChainAppSpec, chainapp_create
from apps.runtime.base import RuntimeUnavailable
from apps.runtime.spec import NodeStatus
from tests.factories import MembershipFactory, RegionFactory


@pytest.mark.django_db
@pytest.mark.parametrize("seen", ["missing", "unreachable"])
def test_a_node_removed_while_it_was_observed_stays_removed(monkeypatch, seen):
    ensure_builtin_framework(Framework)
    region = RegionFactory(code="cn-race", driver="process")
    membership = MembershipFactory()
    spec = ChainAppSpec(name="race", framework="bsn-ledger", regions=[region.code])
    app = chainapp_create(tenant=membership.tenant, actor=membership.user, spec=spec).app
    node = app.nodes.get()

    class Driver:  # the delete step lands while the engine is asked
        def observe(self, spec):
            LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.REMOVED)
            ChainApp.objects.filter(pk=app.pk).update(desired_state=ChainApp.DesiredState.DELETED)
            if seen == "unreachable":
                raise reconcile.TransientRuntimeError("engine away")
            return NodeStatus(name=spec.name, state="missing")

    monkeypatch.setattr(reconcile, "driver_for_region", lambda region: Driver())
    reconcile.reconcile_node(str(node.pk))
    assert LedgerNode.objects.get(pk=node.pk).state == LedgerNode.State.REMOVED


@pytest.mark.django_db
def test_an_engine_that_does_not_answer_shows_the_tenant_a_reason_and_a_reference(monkeypatch):
    ensure_builtin_framework(Framework)
    region = RegionFactory(code="cn-away", driver="process")
    membership = MembershipFactory()
    spec = ChainAppSpec(name="away", framework="bsn-ledger", regions=[region.code])
    node = chainapp_create(tenant=membership.tenant, actor=membership.user, spec=spec).app.nodes.get()

    class Driver:
        def observe(self, spec):
            raise RuntimeUnavailable("Docker engine unix:///run/secret-engine.sock does not answer")

    monkeypatch.setattr(reconcile, "driver_for_region", lambda region: Driver())
    assert reconcile.reconcile_node(str(node.pk)) == LedgerNode.State.UNKNOWN
    shown = LedgerNode.objects.get(pk=node.pk).last_error
    assert "(ref " in shown and "container engine" in shown
    assert "secret-engine" not in shown and "unix://" not in shown

"""An etcd app's node step makes the app's network while it builds the node's configuration
(which creates the app's etcd user and role): side by side, and nothing left running when
either fails (apps.chainapps.provisioning._spec_beside_network)."""

from __future__ import annotations

import threading

import pytest

from apps.chainapps import provisioning
from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.models import Framework
from apps.chainapps.services import ChainAppSpec, chainapp_create
from apps.runtime.base import Networks, PermanentRuntimeError, TransientRuntimeError
from tests.factories import MembershipFactory, RegionFactory

WAIT = 10.0  # seconds either side waits for the other before the test fails


class Driver:
    CAPABILITIES = (Networks,)

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.began = threading.Event()
        self.done = threading.Event()
        self.networks: list[str] = []

    def ensure_network(self, spec):
        self.began.set()
        try:
            if self.fail:
                raise TransientRuntimeError("the engine did not answer")
            assert not spec.secrets  # the network needs no configuration
            self.networks.append(spec.network)
            return "net-id"
        finally:
            self.done.set()


@pytest.fixture
def node(db):
    ensure_builtin_framework(Framework)
    region = RegionFactory(code="cn-side", driver="docker")
    membership = MembershipFactory()
    spec = ChainAppSpec(name="side", framework="bsn-ledger", regions=[region.code])
    return chainapp_create(tenant=membership.tenant, actor=membership.user, spec=spec).app.nodes.get()


def test_the_network_is_made_while_the_configuration_is_built(node, monkeypatch):
    driver = Driver()

    def config(n):  # holds until the network is being made: proof they run side by side
        assert driver.began.wait(WAIT), "the network was not begun while the configuration was built"
        return {"BSN_X": "1"}, {"BSN_NODE_API_CREDENTIAL": "secret"}

    monkeypatch.setattr(provisioning, "node_config", config)
    spec = provisioning._spec_beside_network(driver, node)
    assert spec.secrets == {"BSN_NODE_API_CREDENTIAL": "secret"} and spec.env["BSN_X"] == "1"
    assert driver.networks == [spec.network]


def test_a_configuration_that_fails_waits_for_the_network_and_is_the_error(node, monkeypatch):
    driver = Driver()

    def config(n):
        driver.began.wait(WAIT)
        raise PermanentRuntimeError("its private key cannot be decrypted")

    monkeypatch.setattr(provisioning, "node_config", config)
    with pytest.raises(PermanentRuntimeError, match="cannot be decrypted"):
        provisioning._spec_beside_network(driver, node)
    assert driver.done.is_set()  # nothing of the step still runs after it failed


def test_a_network_that_fails_is_the_error(node, monkeypatch):
    driver = Driver(fail=True)
    monkeypatch.setattr(provisioning, "node_config", lambda n: ({}, {"BSN_NODE_API_CREDENTIAL": "s"}))
    with pytest.raises(TransientRuntimeError, match="did not answer"):
        provisioning._spec_beside_network(driver, node)

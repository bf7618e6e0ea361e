"""One ``transient`` flag across every adapter's errors (apps.runtime.base.is_transient):
retry logic asks it instead of knowing each family."""

from __future__ import annotations

import pytest

from apps.ordering.services import OrderingMisconfigured, OrderingNotReady
from apps.runtime.base import PermanentRuntimeError, PortInUse, RuntimeUnavailable, TransientRuntimeError, is_transient
from apps.runtime.nodeapi import NodeTimeout, NodeUnreachable, NodeUnverified
from bsn.ledger.etcd_http import EtcdAuthError, EtcdCompacted, EtcdError, EtcdUnavailable


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (TransientRuntimeError("x"), True),
        (RuntimeUnavailable("engine down"), True),
        (PortInUse(20001, "taken"), True),
        (PermanentRuntimeError("no image"), False),
        (OrderingNotReady("not yet"), OrderingNotReady.transient),
        (OrderingMisconfigured("root password"), OrderingMisconfigured.transient),
        (EtcdUnavailable("no endpoint"), True),
        (EtcdCompacted(5), True),
        (EtcdAuthError("denied"), False),
        (EtcdError("bad request"), False),
        (NodeUnreachable("refused"), True),
        (NodeUnverified("impostor"), True),
        (NodeTimeout("no reply"), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (ValueError("a bug"), False),
        (KeyError("a bug"), False),
    ],
)
def test_every_family_answers_the_same_question(error, transient):
    assert is_transient(error) is transient


def test_ordering_errors_keep_their_driver_meaning():
    assert is_transient(OrderingNotReady("x")) and not is_transient(OrderingMisconfigured("x"))

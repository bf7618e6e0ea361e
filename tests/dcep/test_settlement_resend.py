"""A settlement batch resent after a crash that followed the chain's apply: anchored once, not stuck.

The batch is anchored, then its row is put back to ``anchoring`` (the crash: the chain
applied the settle transaction, the database never heard). The resend either carries the
same envelope (the node names the committed receipt) or one re-signed with the same
nonce (the node refuses the replayed nonce and knows no transaction with the new id):
both must end anchored with the chain's one transaction.
"""

from __future__ import annotations

import pytest

from apps.chainapps.keys import key_private
from apps.dcep.models import Settlement
from apps.dcep.settlement import settlement_run
from apps.dcep.tier1 import central_bank, chain_batch
from bsn.ledger.tx import sign_tx

pytestmark = pytest.mark.django_db(transaction=True)


def _anchored_batch(clients) -> Settlement:
    cb, a, b = clients["cb"], clients["a"], clients["b"]
    assert cb.post("issuances", {"operator": "bank-a", "amount": 1_000_000}).status_code == 201
    wa = a.post("wallets", {"holder_name": "payer", "tier": 2, "kind": "personal"}).json()["id"]
    wb = b.post("wallets", {"holder_name": "payee", "tier": 2, "kind": "personal"}).json()["id"]
    assert a.post("exchanges", {"wallet": wa, "amount": 300_000}).status_code == 201
    assert a.post("payments", {"from_wallet": wa, "to_wallet": wb, "amount": 1_000}).status_code == 201
    batch = settlement_run(cb.post("settlements").json()["id"])
    assert batch.status == Settlement.Status.ANCHORED, batch.last_error
    return batch


@pytest.mark.parametrize("resigned", [False, True], ids=["same-envelope", "re-signed-envelope"])
def test_resend_after_the_chain_applied_the_batch(tier1, clients, resigned):
    batch = _anchored_batch(clients)
    envelope = batch.envelope
    if resigned:
        tx = {**batch.envelope["tx"], "timestamp": batch.envelope["tx"]["timestamp"] + 1}  # same nonce
        envelope = sign_tx(tx, key_private(central_bank().signing_private_key_encrypted))
    Settlement.objects.filter(pk=batch.pk).update(
        status=Settlement.Status.ANCHORING, anchor_tx_id="", anchor_height=None, anchor_block=None,
        anchored_at=None, envelope=envelope,
    )  # fmt: skip

    again = settlement_run(batch.pk)

    assert again.status == Settlement.Status.ANCHORED, again.last_error
    assert (again.anchor_tx_id, again.anchor_height) == (batch.anchor_tx_id, batch.anchor_height)
    assert again.anchor_block == batch.anchor_block
    record = chain_batch(str(batch.pk))
    assert (record["tx_id"], record["height"]) == (batch.anchor_tx_id, batch.anchor_height)

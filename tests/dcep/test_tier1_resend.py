"""A tier-1 issuance or withdrawal whose answer was lost: the resend finishes it, applied once.

The chain commits the transaction, then the database "never hears" (the op is put back to
pending, the journal left as it was before the answer). A resend with the same envelope
gets the committed receipt; one re-signed with the same nonce (a stale envelope signed
again) is refused as a replayed nonce and resolved through the earlier transaction id.
Either way the chain applied it once and the journal records it once.
"""

from __future__ import annotations

import pytest

from apps.chainapps.keys import key_private
from apps.dcep.models import Tier1Op, Transfer
from apps.dcep.selectors import deep_checks
from apps.dcep.tier1 import central_bank, chain_supply, tier1_resolve
from bsn.ledger.tx import sign_tx, tx_id_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("resigned", [False, True], ids=["same-envelope", "re-signed-envelope"])
def test_issuance_answer_lost_then_resolved_once(tier1, clients, resigned):
    from apps.dcep.tier1 import _envelope, tier1_chain

    chain = tier1_chain()
    # What _start writes before sending: the op with its signed envelope. The chain then
    # commits it (sent here directly), and the control plane crashes before journaling.
    op = Tier1Op(kind="issue", operator_id=clients["a"].tenant.institution.pk, amount=7_000, request_key="lost:1")
    op.envelope = _envelope(chain, "issue", {"operator": "bank-a", "amount": 7_000, "ref": str(op.pk)}, str(op.pk))
    op.tx_id = tx_id_of(op.envelope["tx"])
    op.save()
    from apps.gateway.services import gateway_submit

    assert gateway_submit(app=chain.app, envelope=op.envelope)["status"] == "committed"
    if resigned:
        tx = {**op.envelope["tx"], "timestamp": op.envelope["tx"]["timestamp"] + 1}  # same nonce
        fresh = sign_tx(tx, key_private(central_bank().signing_private_key_encrypted))
        Tier1Op.objects.filter(pk=op.pk).update(envelope=fresh, tx_id=tx_id_of(tx), earlier_tx_ids=[op.tx_id])

    assert tier1_resolve() == 1
    op.refresh_from_db()
    assert op.status == Tier1Op.Status.APPLIED
    assert Transfer.objects.filter(kind="issuance").count() == 1
    assert chain_supply()["allocations"] == {"bank-a": 7_000}
    supply = clients["cb"].get("supply").json()
    assert supply["ok"], supply["checks"]
    assert all(check["ok"] for check in deep_checks())

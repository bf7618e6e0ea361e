"""Tier 1 on chain: the platform's own chain app with the ``dcep`` contract.

Issuance and withdrawal are tier-1 transactions signed with the central bank's key (held
encrypted, like node keys). Each is a ``Tier1Op`` row written *before* it is sent, with
its signed envelope and a nonce fixed to the row's id, so a resend after a crash or a 503
sends the same transaction and the chain applies it at most once:

- issuance: chain first, journal after — the vault is credited only once the chain has
  committed the allocation (never a half-applied issuance);
- withdrawal: journal first (vault → issuance account), chain after — money leaves tier 2
  before the allocation shrinks; if the chain refuses, a reversal transfer puts it back.

``tier1_resolve`` (beat, and every resend) finishes operations left pending.
"""

from __future__ import annotations

import logging

from django.db import transaction

from apps.audit.services import audit_record
from apps.chainapps.keys import key_private
from apps.chainapps.models import ChainApp
from apps.dcep.errors import NotFound, Tier1Unavailable, refusal
from apps.dcep.journal import Journal
from apps.dcep.models import Institution, Tier1Chain, Tier1Op
from apps.gateway.errors import GatewayError
from apps.gateway.services import Definitive, gateway_chain, gateway_query, submit_until_final
from bsn.ledger.tx import make_tx, sign_tx, tx_id_of

logger = logging.getLogger(__name__)

CONTRACT = "dcep"


def tier1_chain(*, ready: bool = True) -> Tier1Chain:
    """The tier-1 chain; with ``ready`` it must also run and know the central bank's key."""
    chain = Tier1Chain.objects.select_related("app").first()
    if chain is None:
        raise Tier1Unavailable("The DCEP tier-1 chain is not set up yet (manage.py dcep_setup).", retry_after=30)
    if ready:
        if chain.app.status not in (ChainApp.Status.RUNNING, ChainApp.Status.DEGRADED):
            raise Tier1Unavailable(f"The DCEP tier-1 chain is {chain.app.status}; retry shortly.")
        if not chain.signer_registered:
            from apps.dcep.institutions import tier1_register_signer

            if tier1_register_signer(chain):
                return chain
            raise Tier1Unavailable("The DCEP tier-1 chain does not know the central bank's key yet; retry shortly.")
    return chain


def central_bank() -> Institution:
    bank = Institution.objects.filter(kind=Institution.Kind.CENTRAL_BANK).select_related("tenant").first()
    if bank is None:
        raise Tier1Unavailable("There is no central bank yet (manage.py dcep_setup).", retry_after=30)
    return bank


def _envelope(chain: Tier1Chain, function: str, args: dict, nonce: str) -> dict:
    tx = make_tx(str(chain.app_id), CONTRACT, function, args, chain.signer, nonce=nonce)
    return sign_tx(tx, key_private(central_bank().signing_private_key_encrypted))


def tier1_send(
    chain: Tier1Chain, envelope: dict, *, function: str, args: dict, nonce: str, store, earlier: tuple[str, ...] = ()
) -> dict:
    """Send until final; the committed receipt. ``store(envelope)`` keeps a re-signed envelope;
    ``earlier`` are the ids of envelopes sent before it (one of them may be the committed one).

    Raises Tier1Unavailable (not known yet: resend) or Definitive (refused for good).
    """

    def resign() -> dict:
        fresh = _envelope(chain, function, args, nonce)
        store(fresh)
        return fresh

    try:
        receipt, _ = submit_until_final(app=chain.app, envelope=envelope, resign=resign, earlier=earlier)
    except GatewayError as exc:
        raise Tier1Unavailable(f"The tier-1 chain did not confirm in time ({exc.detail}); send the same request again.")
    return receipt


def operator_by_slug(slug: str) -> Institution:
    operator = (
        Institution.objects.filter(kind=Institution.Kind.OPERATOR_BANK, tenant__slug=slug)
        .select_related("tenant")
        .first()
    )
    if operator is None:
        raise NotFound(f"No operator bank '{slug}'.")
    return operator


# --------------------------------------------------------------------------- operations


def _start(*, kind: str, operator: Institution, amount: int, request_key: str, journal_first) -> Tier1Op:
    """The Tier1Op of this request: found (a resend) or created with its envelope."""
    chain = tier1_chain()
    existing = Tier1Op.objects.filter(request_key=request_key).first()
    if existing is not None:
        return existing
    with transaction.atomic():
        kind = str(kind)  # the contract function name (a plain str in the signed tx)
        op = Tier1Op(kind=kind, operator=operator, amount=amount, request_key=request_key)
        args = {"operator": operator.slug, "amount": amount, "ref": str(op.pk)}
        op.envelope = _envelope(chain, kind, args, str(op.pk))
        op.tx_id = tx_id_of(op.envelope["tx"])
        if journal_first is not None:
            op.transfer_id = journal_first(op)
        op.save()
    return op


def _finish(op: Tier1Op) -> Tier1Op:
    """Send a pending op until final and apply the outcome to the journal (idempotent)."""
    if op.status != Tier1Op.Status.PENDING:
        return op
    chain = tier1_chain()
    args = {"operator": op.operator.slug, "amount": op.amount, "ref": str(op.pk)}

    op = Tier1Op.objects.select_related("operator__tenant").get(pk=op.pk)  # the latest envelope
    earlier = list(op.earlier_tx_ids)

    def store(envelope: dict) -> None:
        earlier.append(op.tx_id)
        op.tx_id = tx_id_of(envelope["tx"])
        Tier1Op.objects.filter(pk=op.pk).update(envelope=envelope, tx_id=op.tx_id, earlier_tx_ids=earlier)

    try:
        receipt = tier1_send(
            chain, op.envelope, function=str(op.kind), args=args, nonce=str(op.pk), store=store,
            earlier=tuple(op.earlier_tx_ids),
        )  # fmt: skip
    except Definitive as exc:
        _refused(op, str(exc))
    else:
        _applied(op, receipt)
    return Tier1Op.objects.select_related("transfer", "operator__tenant").get(pk=op.pk)


def _applied(op: Tier1Op, receipt: dict) -> None:
    with transaction.atomic():
        locked = Tier1Op.objects.select_for_update().get(pk=op.pk)
        if locked.status != Tier1Op.Status.PENDING:
            return
        locked.receipt = receipt
        locked.tx_id = receipt.get("tx_id") or locked.tx_id
        locked.status = Tier1Op.Status.APPLIED
        if locked.kind == Tier1Op.Kind.ISSUE:
            j = Journal()
            j.lock(vault_of=[locked.operator_id], issuance=True)
            transfer = j.post(
                kind="issuance",
                amount=locked.amount,
                source=j.issuance(),
                target=j.vault(locked.operator_id),
                tier1=(locked.tx_id, receipt.get("height")),
            )
            j.flush()
            locked.transfer_id = transfer["id"]
        locked.save()


def _refused(op: Tier1Op, why: str) -> None:
    with transaction.atomic():
        locked = Tier1Op.objects.select_for_update().get(pk=op.pk)
        if locked.status != Tier1Op.Status.PENDING:
            return
        locked.status, locked.last_error = Tier1Op.Status.REFUSED, why[:2000]
        if locked.kind == Tier1Op.Kind.WITHDRAW and locked.transfer_id:
            j = Journal()
            j.lock(vault_of=[locked.operator_id], issuance=True)
            reversal = j.post(
                kind="reversal", amount=locked.amount, source=j.issuance(), target=j.vault(locked.operator_id),
                memo=f"reversal of refused withdrawal {locked.pk}",
            )  # fmt: skip
            j.flush()
            locked.reversal_id = reversal["id"]
        locked.save()


def issuance_create(*, operator_slug: str, amount: int, request_key: str, actor=None) -> Tier1Op:
    """Central bank → operator: the chain commits the allocation, then the vault is credited."""
    operator = operator_by_slug(operator_slug)
    op = _start(kind=Tier1Op.Kind.ISSUE, operator=operator, amount=amount, request_key=request_key, journal_first=None)
    op = _finish(op)
    if op.status == Tier1Op.Status.REFUSED:
        raise refusal("tier1-refused", f"The tier-1 chain refused the issuance: {op.last_error}")
    audit_record(
        action="dcep.issuance", object_type="transfer", object_id=op.transfer_id, tenant=central_bank().tenant,
        actor=actor, data={"operator": operator.slug, "amount": amount, "tx_id": op.tx_id},
    )  # fmt: skip
    return op


def withdrawal_create(*, operator_slug: str, amount: int, request_key: str, actor=None) -> Tier1Op:
    """Operator → central bank: the vault is debited first, then the chain shrinks the allocation."""
    operator = operator_by_slug(operator_slug)

    def debit_vault(op: Tier1Op):
        j = Journal()
        j.lock(vault_of=[operator.pk], issuance=True)
        vault = j.vault(operator.pk)
        if vault.balance < amount:
            raise refusal(
                "insufficient-funds",
                f"{operator.slug} holds {vault.balance} fen unallocated in its vault, needs {amount}.",
            )
        transfer = j.post(kind="withdrawal", amount=amount, source=vault, target=j.issuance(), tier1=(op.tx_id, None))
        j.flush()
        return transfer["id"]

    op = _start(
        kind=Tier1Op.Kind.WITHDRAW, operator=operator, amount=amount, request_key=request_key, journal_first=debit_vault
    )
    op = _finish(op)
    if op.status == Tier1Op.Status.REFUSED:
        raise refusal(
            "insufficient-funds", f"The tier-1 chain refused the withdrawal (the vault was restored): {op.last_error}"
        )
    audit_record(
        action="dcep.withdrawal", object_type="transfer", object_id=op.transfer_id, tenant=central_bank().tenant,
        actor=actor, data={"operator": operator.slug, "amount": amount, "tx_id": op.tx_id},
    )  # fmt: skip
    return op


def tier1_resolve(*, limit: int = 100) -> int:
    """Finish tier-1 operations left pending (a crash, a 503); how many were finished."""
    done = 0
    for op in Tier1Op.objects.filter(status=Tier1Op.Status.PENDING).select_related("operator__tenant")[:limit]:
        try:
            if _finish(op).status != Tier1Op.Status.PENDING:
                done += 1
        except Tier1Unavailable as exc:  # this one later; the others may be fine
            logger.info("tier-1 op %s still pending: %s", op.pk, exc.detail)
    return done


# --------------------------------------------------------------------------- reads


def chain_supply(chain: Tier1Chain | None = None) -> dict:
    """``{"issued", "withdrawn", "allocations": {slug: fen}}`` as the chain holds it."""
    chain = chain or tier1_chain(ready=False)
    try:
        return gateway_query(app=chain.app, contract=CONTRACT, function="supply", args={})
    except GatewayError as exc:
        raise Tier1Unavailable(f"The tier-1 chain cannot be read right now ({exc.detail}).") from exc


def chain_batch(batch_id: str, chain: Tier1Chain | None = None) -> dict | None:
    chain = chain or tier1_chain(ready=False)
    try:
        return gateway_query(app=chain.app, contract=CONTRACT, function="batch", args={"batch_id": batch_id})
    except GatewayError as exc:
        raise Tier1Unavailable(f"The tier-1 chain cannot be read right now ({exc.detail}).") from exc


def chain_info(chain: Tier1Chain | None = None) -> dict:
    chain = chain or tier1_chain(ready=False)
    try:
        return gateway_chain(app=chain.app)
    except GatewayError as exc:
        raise Tier1Unavailable(f"The tier-1 chain cannot be read right now ({exc.detail}).") from exc

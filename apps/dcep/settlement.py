"""Interbank net settlement: claim the unsettled obligations, net them, anchor on tier 1.

A batch is a ``Settlement`` row that moves pending → anchoring → anchored:

1. claim (one transaction): every cross-operator transfer not yet in a batch gets the
   batch's id (one UPDATE), the positions are netted with one GROUP BY, the leaves
   (canonical JSON of each transfer, ordered by ``created_at, id``) are hashed into an
   RFC 6962 Merkle root, and the signed ``settle`` envelope (nonce = batch id) is stored;
2. anchor: the envelope is sent until the chain answers; the contract applies a batch id
   once, so a second start, a retry or a crash between the steps never settles twice;
3. the anchoring block is stored whole, so a proof can be checked offline.

At most one batch is open (pending or anchoring) at a time: starting another returns it.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from apps.audit.services import audit_record
from apps.dcep.errors import Tier1Unavailable, refusal
from apps.dcep.models import Settlement, Tier1Chain, Transfer
from apps.dcep.selectors import institution_slugs
from apps.dcep.tier1 import _envelope, chain_batch, tier1_chain, tier1_send
from apps.gateway.errors import GatewayError
from apps.gateway.services import Definitive, gateway_block
from bsn.ledger.canonical import canonical
from bsn.ledger.merkle import inclusion_proof_of_hashes, leaf_hash, root_of_hashes

logger = logging.getLogger(__name__)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_LEAF_FIELDS = (
    "id",
    "kind",
    "amount",
    "memo",
    "created_at",
    "hold_id",
    "obligation",
    "from_account__kind",
    "from_account__number",
    "to_account__number",
    "obligor__tenant__slug",
    "obligee__tenant__slug",
)


def leaf_object(row: dict) -> dict:
    """What a leaf says about a transfer (docs/dcep.md, "Leaves")."""
    source = row["from_account__number"] if row["from_account__kind"] == "wallet" else f"hold:{row['hold_id']}"
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "amount": row["amount"],
        "from": source,
        "to": row["to_account__number"],
        "obligor": row["obligor__tenant__slug"],
        "obligee": row["obligee__tenant__slug"],
        "obligation": row["obligation"],
        "memo": row["memo"],
        "created_at": (row["created_at"] - _EPOCH) // dt.timedelta(milliseconds=1),
    }


def leaf_bytes(row: dict) -> bytes:
    return canonical(leaf_object(row))


def batch_leaf_hashes(settlement_id) -> list[bytes]:
    """The leaf hashes of a batch's transfers, in leaf order (``created_at``, ``id``)."""
    rows = (
        Transfer.objects.filter(settlement_id=settlement_id)
        .order_by("created_at", "id")
        .values(*_LEAF_FIELDS)
        .iterator(chunk_size=5000)
    )
    return [leaf_hash(leaf_bytes(row)) for row in rows]


def _log(settlement: Settlement, message: str) -> None:
    settlement.log = [*settlement.log, {"at": timezone.now().isoformat(), "message": message}][-50:]


# --------------------------------------------------------------------------- start


def settlement_start(
    *, started_by=None, skip_if_empty: bool = False, actor=None, request=None
) -> tuple[Settlement | None, bool]:
    """The open batch, or a new one enqueued: ``(settlement, created)``. A new batch started
    by a tenant (the API, the portal) is audited with who asked."""
    open_batch = Settlement.objects.filter(status__in=[Settlement.Status.PENDING, Settlement.Status.ANCHORING]).first()
    if open_batch is not None:
        return open_batch, False
    if skip_if_empty and not Transfer.objects.filter(obligation__gt=0, settlement__isnull=True).exists():
        return None, False
    tier1_chain(ready=False)
    try:
        with transaction.atomic():
            settlement = Settlement.objects.create(started_by=started_by, log=[])
            _log(settlement, "started")
            settlement.save(update_fields=["log"])
            if started_by is not None:
                audit_record(
                    action="dcep.settlement.start",
                    object_type="settlement",
                    object_id=str(settlement.pk),
                    tenant=started_by,
                    actor=actor,
                    request=request,
                )
            from apps.dcep.tasks import enqueue_settlement

            settlement_id = str(settlement.pk)
            transaction.on_commit(lambda: enqueue_settlement(settlement_id))
    except IntegrityError:  # another start won the race: there is one open batch, return it
        return Settlement.objects.filter(
            status__in=[Settlement.Status.PENDING, Settlement.Status.ANCHORING]
        ).first(), False
    return settlement, True


# --------------------------------------------------------------------------- run


def settlement_run(settlement_id) -> Settlement | None:
    """Drive one batch as far as it can go now (idempotent: safe to run twice, or after a crash)."""
    settlement = Settlement.objects.filter(pk=settlement_id).first()
    if settlement is None:
        return None
    if settlement.status == Settlement.Status.PENDING:
        _claim(settlement.pk)
    settlement.refresh_from_db()
    if settlement.status == Settlement.Status.ANCHORING:
        _anchor(settlement)
    settlement.refresh_from_db()
    return settlement


def _claim(settlement_id) -> None:
    with transaction.atomic():
        settlement = (
            Settlement.objects.select_for_update().filter(pk=settlement_id, status=Settlement.Status.PENDING).first()
        )
        if settlement is None:
            return
        chain = tier1_chain(ready=False)
        Transfer.objects.filter(obligation__gt=0, settlement__isnull=True).update(settlement=settlement)
        hashes = batch_leaf_hashes(settlement.pk)
        slugs = institution_slugs()
        positions: dict[str, int] = {}
        pairs = (
            Transfer.objects.filter(settlement=settlement)
            .values("obligor_id", "obligee_id")
            .annotate(total=Sum("obligation"))
        )
        for pair in pairs:
            positions[slugs[pair["obligor_id"]]] = positions.get(slugs[pair["obligor_id"]], 0) - pair["total"]
            positions[slugs[pair["obligee_id"]]] = positions.get(slugs[pair["obligee_id"]], 0) + pair["total"]
        positions = {slug: value for slug, value in sorted(positions.items()) if value}
        root = root_of_hashes(hashes).hex()
        settlement.positions = positions
        settlement.transfer_count = len(hashes)
        settlement.merkle_root = root
        settlement.leaf_hashes = b"".join(hashes)
        args = {
            "batch_id": str(settlement.pk),
            "positions": positions,
            "merkle_root": root,
            "transfer_count": len(hashes),
        }
        settlement.envelope = _envelope(chain, "settle", args, str(settlement.pk))
        settlement.status = Settlement.Status.ANCHORING
        _log(settlement, f"claimed {len(hashes)} transfers; root {root}; positions {positions}")
        settlement.save()


def _anchor(settlement: Settlement) -> None:
    chain = tier1_chain()
    args = settlement.envelope["tx"]["args"]
    Settlement.objects.filter(pk=settlement.pk).update(attempts=F("attempts") + 1)

    def store(envelope: dict) -> None:
        Settlement.objects.filter(pk=settlement.pk).update(envelope=envelope)

    try:
        receipt = tier1_send(
            chain, settlement.envelope, function="settle", args=args, nonce=str(settlement.pk), store=store
        )
        tx_id, height = receipt["tx_id"], receipt["height"]
    except (Definitive, Tier1Unavailable) as exc:
        # Applied before under another envelope (a re-signed one)? The chain keeps the batch.
        # The node answers such a resend with a replayed nonce whose tx id it does not know,
        # which the gateway reports as not committed yet (Tier1Unavailable): look here too.
        record = chain_batch(str(settlement.pk), chain)
        if record is None or record.get("merkle_root") != settlement.merkle_root:
            if isinstance(exc, Tier1Unavailable):
                raise
            Settlement.objects.filter(pk=settlement.pk).update(
                status=Settlement.Status.FAILED, last_error=str(exc)[:2000]
            )
            logger.error("settlement %s refused by the chain: %s", settlement.pk, exc)
            return
        tx_id, height = record["tx_id"], record["height"]
    try:
        block = gateway_block(app=chain.app, height=height)
    except GatewayError as exc:
        raise Tier1Unavailable(f"The anchoring block {height} cannot be read yet ({exc.detail}).") from exc
    with transaction.atomic():
        locked = Settlement.objects.select_for_update().get(pk=settlement.pk)
        if locked.status != Settlement.Status.ANCHORING:
            return
        locked.status = Settlement.Status.ANCHORED
        locked.anchor_tx_id, locked.anchor_height, locked.anchor_block = tx_id, height, block
        locked.anchored_at = timezone.now()
        locked.last_error = ""
        _log(locked, f"anchored in block {height} (tx {tx_id})")
        locked.save()


def anchored_on_chain(chain: Tier1Chain | None = None) -> set[str]:
    """The open (anchoring) batches the chain has already applied: their obligations count as settled.

    ``selectors.supply_report(..., anchored_on_chain=...)`` needs them so that the tiers
    stay joined between the chain committing a batch and the batch row being marked anchored.
    """
    chain = chain or tier1_chain(ready=False)
    open_ids = Settlement.objects.filter(status=Settlement.Status.ANCHORING).values_list("pk", flat=True)
    return {str(pk) for pk in open_ids if chain_batch(str(pk), chain) is not None}


# --------------------------------------------------------------------------- proofs


def transfer_proof(transfer: Transfer) -> dict:
    """The inclusion proof of a settled transfer and the block that anchors its batch."""
    if transfer.settlement_id is None:
        raise refusal("not-settled", "This transfer is in no settlement batch yet (only interbank transfers are).")
    settlement = Settlement.objects.get(pk=transfer.settlement_id)
    if settlement.status != Settlement.Status.ANCHORED:
        raise refusal("not-anchored", f"Its settlement batch is {settlement.status}; the proof follows the anchor.")
    row = Transfer.objects.filter(pk=transfer.pk).values(*_LEAF_FIELDS).get()
    earlier = Q(created_at__lt=transfer.created_at) | Q(created_at=transfer.created_at, id__lt=transfer.pk)
    index = Transfer.objects.filter(settlement=settlement).filter(earlier).count()
    raw = bytes(settlement.leaf_hashes)
    hashes = [raw[i : i + 32] for i in range(0, len(raw), 32)]
    leaf = leaf_bytes(row)
    if hashes[index] != leaf_hash(leaf):  # the stored batch or the journal was altered
        raise refusal(
            "proof-mismatch",
            "The settlement batch stored for this transfer does not match it; no proof is given. "
            "The operator is alerted by manage.py dcep_audit.",
            status=500,
        )
    return {
        "leaf": leaf.decode(),
        "leaf_index": index,
        "tree_size": len(hashes),
        "audit_path": [h.hex() for h in inclusion_proof_of_hashes(hashes, index)],
        "merkle_root": settlement.merkle_root,
        "settlement": str(settlement.pk),
        "anchor": {
            "app": str(tier1_chain(ready=False).app_id),
            "tx_id": settlement.anchor_tx_id,
            "height": settlement.anchor_height,
            "block": settlement.anchor_block,
        },
    }

"""dcep_verify <transfer id> — check a settled transfer's proof and its anchoring block offline."""

from __future__ import annotations

import uuid

from django.core.management.base import BaseCommand, CommandError

from apps.chainapps.models import LedgerNode
from apps.common.errors import DomainError
from apps.dcep.models import Account, Transfer
from apps.dcep.proofcheck import Expected, proof_checks
from apps.dcep.settlement import transfer_proof
from apps.dcep.tier1 import central_bank, tier1_chain


def expected_for(transfer: Transfer) -> Expected:
    """What the control plane knows apart from the proof: the transfer, the app's node keys, the bank's key."""
    chain = tier1_chain(ready=False)
    source = transfer.from_account
    from_ = source.number if source.kind == Account.Kind.WALLET else f"hold:{transfer.hold_id}"
    keys = LedgerNode.objects.filter(app_id=chain.app_id).exclude(public_key="").values_list("pk", "public_key")
    return Expected(
        transfer={"id": str(transfer.pk), "amount": transfer.amount, "from": from_, "to": transfer.to_account.number},
        app_id=str(chain.app_id),
        node_keys={str(pk): key for pk, key in keys},
        signer=chain.signer,
        signer_public_key=central_bank().signing_public_key,
    )


class Command(BaseCommand):
    help = (
        "Fetch a settled transfer's inclusion proof and check it as an outsider would (docs/dcep.md): the leaf "
        "is the transfer, the Merkle path leads to the batch root, the anchoring block's hash, Merkle root and "
        "proposer signature hold, and it contains the central bank's signed dcep.settle of this batch and root."
    )

    def add_arguments(self, parser):
        parser.add_argument("transfer", help="transfer id (a UUID)")

    def handle(self, *args, transfer, **options):
        try:
            transfer_id = uuid.UUID(transfer)
        except ValueError:
            raise CommandError(f"'{transfer}' is not a transfer id (a UUID)") from None
        row = Transfer.objects.select_related("from_account", "to_account").filter(pk=transfer_id).first()
        if row is None:
            raise CommandError(f"no transfer {transfer_id}")
        try:
            proof = transfer_proof(row)
            expected = expected_for(row)
        except DomainError as exc:
            raise CommandError(exc.detail) from exc
        checks = proof_checks(proof, expected)
        self.stdout.write(
            f"transfer {transfer_id}: leaf {proof['leaf_index']} of {proof['tree_size']} in batch "
            f"{proof['settlement']}, anchored at height {proof['anchor']['height']}"
        )
        for check in checks:
            self.stdout.write(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
        failed = [c.name for c in checks if not c.ok]
        if failed:
            raise CommandError(f"the proof of transfer {transfer_id} does not verify: {'; '.join(failed)}")
        self.stdout.write(f"verified: transfer {transfer_id} is in anchored settlement {proof['settlement']}")

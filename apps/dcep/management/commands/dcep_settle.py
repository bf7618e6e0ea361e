"""dcep_settle — run a settlement batch now, in this process; print positions and the anchor."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from apps.common.errors import DomainError
from apps.dcep.models import Settlement
from apps.dcep.settlement import settlement_run, settlement_start


class Command(BaseCommand):
    help = (
        "Net every unsettled interbank obligation into one batch and anchor it on the tier-1 chain, in this "
        "process (no worker needed); drives an open batch instead if there is one."
    )

    def handle(self, *args, **options):
        try:
            batch, created = settlement_start(skip_if_empty=True)
        except DomainError as exc:
            raise CommandError(exc.detail) from exc
        if batch is None:
            self.stdout.write("nothing to settle: no unsettled interbank transfer")
            return
        if not created:
            self.stdout.write(f"driving the open batch {batch.pk} ({batch.status})")
        try:
            batch = settlement_run(batch.pk)
        except DomainError as exc:
            raise CommandError(f"{exc.detail} (batch {batch.pk} stays open: run dcep_settle again)") from exc
        if batch.status == Settlement.Status.FAILED:
            raise CommandError(f"batch {batch.pk} failed: {batch.last_error}")
        if batch.status != Settlement.Status.ANCHORED:  # pragma: no cover - run raises before
            raise CommandError(f"batch {batch.pk} is {batch.status}; run dcep_settle again")
        positions = ", ".join(f"{slug} {value:+d}" for slug, value in batch.positions.items()) or "none"
        block_hash = (batch.anchor_block or {}).get("hash")
        self.stdout.write(f"batch {batch.pk}: anchored")
        self.stdout.write(f"  transfers:   {batch.transfer_count}")
        self.stdout.write(f"  positions:   {positions}")
        self.stdout.write(f"  merkle root: {batch.merkle_root}")
        self.stdout.write(f"  anchor:      tx {batch.anchor_tx_id}, height {batch.anchor_height}, block {block_hash}")

"""dcep_audit — the supply per operator and every invariant, from the journal and the tier-1 chain."""

from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand, CommandError

from apps.dcep.errors import Tier1Unavailable
from apps.dcep.models import Settlement
from apps.dcep.selectors import deep_checks, supply_report
from apps.dcep.settlement import anchored_on_chain, settlement_run
from apps.dcep.tier1 import chain_supply, tier1_chain, tier1_resolve

COLUMNS = ("chain_balance", "vault", "wallets", "held", "unsettled_out", "unsettled_in", "withdrawing")


class Command(BaseCommand):
    help = (
        "Finish pending tier-1 operations and an open settlement batch, then print the supply per operator and "
        "every invariant (journal and chain; --deep also every balance, transfer sum and entry hash chain). "
        "Exit 1 if one fails."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--deep",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="recompute every balance, transfer and hash chain from the entries (default: on)",
        )

    def handle(self, *args, deep, **options):
        notes = self._settle_loose_ends()
        chain, chain_problem = None, None
        try:
            tier1 = tier1_chain(ready=False)
            chain = chain_supply(tier1)
            anchored = anchored_on_chain(tier1)
        except Tier1Unavailable as exc:
            chain_problem, anchored = exc.detail, set()
        report = supply_report(chain, anchored_on_chain=anchored)
        checks = list(report["checks"])
        if chain_problem is not None:
            checks.insert(0, {"name": "chain: the tier-1 supply can be read", "ok": False, "detail": chain_problem})
        if deep:
            checks += deep_checks()

        for note in notes:
            self.stdout.write(note)
        self.stdout.write(
            f"issued {report['issued']}  withdrawn {report['withdrawn']}  in circulation {report['in_circulation']} "
            "(fen)"
        )
        self.stdout.write(f"{'OPERATOR':<14}" + "".join(f"{c.upper():>15}" for c in COLUMNS))
        for slug, row in report["operators"].items():
            cells = "".join(f"{row.get(c, '-'):>15}" for c in COLUMNS)
            self.stdout.write(f"{slug:<14}{cells}")
        self.stdout.write("")
        for check in checks:
            self.stdout.write(f"{'ok  ' if check['ok'] else 'FAIL'}  {check['name']}: {check['detail']}")
        failed = [c["name"] for c in checks if not c["ok"]]
        if failed:
            raise CommandError(f"{len(failed)} of {len(checks)} checks failed: {'; '.join(failed)}")
        self.stdout.write(f"all {len(checks)} checks pass")

    def _settle_loose_ends(self) -> list[str]:
        """Pending tier-1 operations and an open batch first, so the figures are final where they can be."""
        notes = []
        try:
            finished = tier1_resolve()
        except Tier1Unavailable as exc:  # pragma: no cover - tier1_resolve stops on its own
            finished = 0
            notes.append(f"pending tier-1 operations not finished: {exc.detail}")
        if finished:
            notes.append(f"finished {finished} pending tier-1 operation(s)")
        for batch in Settlement.objects.filter(status__in=[Settlement.Status.PENDING, Settlement.Status.ANCHORING]):
            try:
                batch = settlement_run(batch.pk)
                notes.append(f"open settlement batch {batch.pk}: {batch.status}")
            except Tier1Unavailable as exc:
                notes.append(f"open settlement batch {batch.pk} not anchored yet: {exc.detail}")
        return notes

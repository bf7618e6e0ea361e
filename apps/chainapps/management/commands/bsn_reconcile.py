"""bsn_reconcile [--region CODE ...] [--dry-run] — one reconcile pass now, and what it changed."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from apps.chainapps.reconcile import reconcile_region
from apps.regions.models import Region

COUNTS = ("observed", "restarted", "stopped", "removed", "orphans")


class Command(BaseCommand):
    help = "Run a reconcile pass now (every region, or those named) in this process and print what it changed."

    def add_arguments(self, parser):
        parser.add_argument("--region", action="append", dest="regions", metavar="CODE", help="repeatable")
        parser.add_argument("--dry-run", action="store_true", help="observe and report only: repair nothing")

    def handle(self, *args, regions, dry_run, **options):
        known = list(Region.objects.order_by("code").values_list("code", flat=True))
        codes = regions or known
        unknown = sorted(set(codes) - set(known))
        if unknown:
            raise CommandError(f"unknown region(s): {', '.join(unknown)}")
        if not codes:
            raise CommandError("no regions yet (manage.py bsn_region add)")
        failed = []
        self.stdout.write(f"{'region':<20} " + " ".join(f"{c:>9}" for c in COUNTS) + "  result")
        for code in codes:
            report = reconcile_region(code, repair=not dry_run)
            result = f"engine unavailable: {report['error']}" if "error" in report else "ok"
            if "skipped" in report:  # another pass held the region for the whole wait
                result = f"skipped: {report['skipped']}"
            if "error" in report or "skipped" in report:
                failed.append(code)
            self.stdout.write(f"{code:<20} " + " ".join(f"{report.get(c, 0):>9}" for c in COUNTS) + f"  {result}")
        if dry_run:
            self.stdout.write("dry run: observed and recorded only; nothing was restarted, stopped or removed")
        if failed:
            raise CommandError(f"{len(failed)} region(s) could not be reconciled: {', '.join(failed)}")

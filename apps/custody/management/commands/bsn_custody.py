"""bsn_custody status|rotate-master — the master keys that wrap tenants' custody data keys."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from apps.custody.services import master_rotate, master_usage


class Command(BaseCommand):
    help = (
        "Key custody master keys (BSN_CUSTODY_MASTER_KEYS, newest first): `status` shows which master key "
        "wraps how many tenant data keys; `rotate-master` rewraps every data key under the newest master key "
        "(no private key is re-encrypted). Exit 1 if a data key could not be rewrapped."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("status")
        sub.add_parser("rotate-master")

    def handle(self, *args, action, **options):
        if action == "status":
            self.do_status()
        else:
            self.do_rotate()

    def do_status(self):
        self.stdout.write(f"{'MASTER KEY':<34} {'DATA KEYS':>9}  STATE")
        for index, (key_id, count, configured) in enumerate(master_usage()):
            if not configured:
                state = "MISSING: these tenants' custody keys cannot be used"
            elif index == 0:
                state = "newest (wraps new data keys)"
            elif count:
                state = "older: run rotate-master before removing it"
            else:
                state = "older, unused: safe to remove"
            self.stdout.write(f"{key_id:<34} {count:>9}  {state}")

    def do_rotate(self):
        report = master_rotate()
        for slug in report.rewrapped:
            self.stdout.write(f"rewrapped  {slug} -> {report.newest}")
        for slug, why in report.failed:
            self.stderr.write(f"FAILED     {slug}: {why}")
        self.stdout.write(
            f"{len(report.rewrapped)} rewrapped, {report.current} already under {report.newest}, "
            f"{len(report.failed)} failed"
        )
        if report.failed:
            raise CommandError("some data keys were not rewrapped (see above); they keep their old master key")

"""bsn_worker — run a Celery worker on the default queue and the queues of chosen regions."""

from __future__ import annotations

import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.chainapps.workers import FOLLOW_ENV, worker_argv
from apps.regions.models import Region


class Command(BaseCommand):
    help = "Start a Celery worker for the given regions (default: every region in the database)."

    def add_arguments(self, parser):
        parser.add_argument("regions", nargs="*", help="region codes (default: all)")
        parser.add_argument("--no-default", action="store_true", help="do not consume the default queue")
        parser.add_argument("--concurrency", type=int, default=4)
        parser.add_argument("--beat", action="store_true", help="also run the beat scheduler in this worker")

    def handle(self, *args, regions, no_default, concurrency, beat, **options):
        known = {r.code: r for r in Region.objects.all()}
        codes = regions or list(known)
        unknown = [c for c in codes if c not in known]
        if unknown:
            raise CommandError(f"unknown region(s): {', '.join(unknown)}")
        queues = ([] if no_default else [settings.CELERY_TASK_DEFAULT_QUEUE]) + [known[c].queue for c in codes]
        if not queues:
            raise CommandError("no queues to consume: add a region first (manage.py bsn_region add)")
        argv = worker_argv(queues, concurrency=concurrency, name=f"bsn-{os.getpid()}@%h")
        if beat:
            argv.append("-B")
        if not regions:  # every region: also those added while this worker runs
            os.environ[FOLLOW_ENV] = "1"
        self.stderr.write(
            f"consuming {', '.join(queues)}" + ("" if regions else " and the queue of every region added later")
        )
        os.execv(sys.executable, argv)  # noqa: S606 - replace this process with the worker

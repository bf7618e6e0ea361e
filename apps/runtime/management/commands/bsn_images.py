"""``manage.py bsn_images build|status``: the ledger node image, built with no registry."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.runtime.images import BASE_CHOICES, ImageBuildError, ledger_image_ensure, ledger_image_status


class Command(BaseCommand):
    help = (
        "Build the ledger node image (bsn/ledger:<content-hash> and :latest) from "
        "deploy/ledger/Dockerfile, on python:3.11-slim if present locally, else on a "
        "Debian base made with debootstrap; or show whether it is up to date."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        build = sub.add_parser("build", help="build the image unless the current one exists")
        build.add_argument(
            "--force", action="store_true", help="rebuild the base (debootstrap) and the ledger image, no cache"
        )
        build.add_argument(
            "--base",
            choices=BASE_CHOICES,
            default="auto",
            help="auto: python:3.11-slim if present locally, else debootstrap (default)",
        )
        sub.add_parser("status", help="show the base, the expected tag and whether it exists; exit 1 if not")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["action"] == "build":
                self._build(options)
            else:
                self._status()
        except ImageBuildError as exc:
            raise CommandError(str(exc)) from exc

    def _build(self, options: dict[str, Any]) -> None:
        started = time.monotonic()
        result = ledger_image_ensure(base=options["base"], force=options["force"], say=self.stdout.write)
        what = "built" if result.built else "cached"
        took = time.monotonic() - started
        line = f"{result.tag} ({what}, base {result.base_image}, {took:.1f}s) = bsn/ledger:latest"
        self.stdout.write(self.style.SUCCESS(line))

    def _status(self) -> None:
        status = ledger_image_status()
        self.stdout.write(f"engine:  {status['engine']}")
        base_id = status["base_id"]
        self.stdout.write(f"base:    {status['base']} ({base_id[7:19] if base_id else 'missing; build creates it'})")
        self.stdout.write(f"image:   {status['tag'] or '-'} ({'present' if status['image_id'] else 'missing'})")
        latest = status["latest_id"]
        state = "missing" if not latest else "current" if status["up_to_date"] else "points at another build"
        self.stdout.write(f"latest:  bsn/ledger:latest ({state})")
        if not status["up_to_date"]:
            raise CommandError("the ledger image is missing or out of date; run: python manage.py bsn_images build")

"""events_pump — hand new contract events to their consumers now, in this process; print the cursors."""

from __future__ import annotations

import uuid

from django.core.management.base import BaseCommand, CommandError

from apps.events.models import EventCursor, EventFeed
from apps.events.services import consumers, interested_app_ids, pump_app


class Command(BaseCommand):
    help = (
        "Read the committed blocks of the given apps (default: every app some consumer wants events of) and "
        "hand their events to the consumers, in this process (no worker needed); print each cursor."
    )

    def add_arguments(self, parser):
        parser.add_argument("apps", nargs="*", help="app ids (default: every app with an interested consumer)")

    def handle(self, *args, **options):
        resolved = consumers()
        for consumer in resolved:
            if not consumer.ok:
                self.stderr.write(f"consumer {consumer.name} is unavailable: {consumer.error}")
        try:
            app_ids = [uuid.UUID(a) for a in options["apps"]] or list(interested_app_ids(resolved))
        except ValueError as exc:
            raise CommandError(f"not an app id: {exc}") from exc
        if not app_ids:
            self.stdout.write("no app has an interested consumer")
            return
        failed = []
        for app_id in app_ids:
            read = pump_app(app_id, resolved=resolved)
            feed = EventFeed.objects.filter(pk=app_id).first()
            head = feed.node_height if feed else "?"
            self.stdout.write(f"app {app_id}: {read} events read, chain head {head}")
            if feed and feed.last_error:
                failed.append(app_id)
                self.stdout.write(f"  error: {feed.last_error}")
            for cursor in EventCursor.objects.filter(app_id=app_id).order_by("consumer"):
                note = f"  ({cursor.last_error})" if cursor.last_error else ""
                self.stdout.write(f"  {cursor.consumer}: height {cursor.height}{note}")
                if cursor.last_error:
                    failed.append(app_id)
        if failed:
            raise CommandError(f"{len(set(failed))} app(s) could not be pumped fully; see above")

"""bsn_ordering status|ensure|heal|spares N — operate the platform's etcd ordering service."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from apps.ordering import services
from apps.ordering.models import OrderingCluster
from apps.ordering.selectors import ordering_status
from apps.runtime.base import RuntimeError_
from bsn.ledger.etcd_http import EtcdError

MAX_SPARES = 50


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


class Command(BaseCommand):
    help = "Show, create/adopt or heal the ordering service (three etcd members)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "ensure", "heal", "spares"])
        parser.add_argument(
            "count", nargs="?", type=int, help="spares: etcd users to keep made ahead for the next etcd apps"
        )
        parser.add_argument("--timeout", type=float, default=services.ENSURE_TIMEOUT, help="ensure: seconds to wait")

    def handle(self, *args, action, timeout, count=None, **options):
        try:
            if action == "spares":
                self._spares(count)
            elif action == "ensure":
                cluster = services.ordering_ensure(timeout=timeout)
                self.stdout.write(f"ordering service {cluster.state}")
            elif action == "heal":
                report = services.ordering_heal()
                restarted = ", ".join(report["restarted"]) or "none"
                rejoined = ", ".join(report.get("rejoined") or []) or "none"
                self.stdout.write(
                    f"ordering service {report['state']}: restarted {restarted}, rejoined empty {rejoined}, "
                    f"{report['attached']} network attachments"
                )
                for error in report["errors"]:
                    self.stderr.write(f"  {error}")
            self._status()
        except (RuntimeError_, EtcdError, ValueError) as exc:
            raise CommandError(str(exc).splitlines()[0]) from None

    def _spares(self, count: int | None) -> None:
        if count is None or not 0 <= count <= MAX_SPARES:
            raise CommandError(f"spares needs a count from 0 to {MAX_SPARES}, e.g. `bsn_ordering spares 2`")
        if not OrderingCluster.objects.filter(pk=1, auth_enabled=True).update(spare_users=count):
            raise CommandError("the ordering service is not provisioned (run `manage.py bsn_ordering ensure`)")
        report = services.ordering_spares_fill()
        self.stdout.write(
            f"spare etcd users: {count} wanted; made {report['made']}, dropped {report['dropped']}"
            + (f" ({report['skipped']}: the next heal makes them)" if report.get("skipped") else "")
        )
        for error in report["errors"]:
            self.stderr.write(f"  {error}")

    def _status(self) -> None:
        status = ordering_status()
        if not status["provisioned"]:
            self.stdout.write("ordering service: not provisioned (run `manage.py bsn_ordering ensure`)")
            return
        auth = "on" if status["auth_enabled"] else "OFF"
        self.stdout.write(
            f"cluster: {status['state']}, auth {auth}, {status['apps']} app(s) with credentials, "
            f"{status['spare_users']} of {status['spare_users_wanted']} spare user(s) made ahead"
        )
        rows = [["#", "MEMBER", "REGION", "ENGINE", "STATE", "ANSWERS", "LEADER", "ENDPOINT", "DB", "LAST ERROR"]]
        for m in status["members"]:
            rows.append(
                [
                    str(m["index"]),
                    m["name"],
                    m["region"],
                    m["engine"],
                    m["state"],
                    "yes" if m["answers"] else "no",
                    "*" if m["is_leader"] else "",
                    m["endpoint"] or "-",
                    f"{m['db_size'] // 1024} KiB" if m["db_size"] is not None else "-",
                    (m["last_error"] or "").splitlines()[0][:60] if m["last_error"] else "",
                ]
            )
        self.stdout.write(_table(rows))
        most, engines = status["most_on_one_engine"], status["engines"]
        line = f"placement: {len(status['members'])} members on {engines} engine(s)"
        if most > 1:  # two of three members make the quorum
            line += f"; losing one engine loses {most} members and the quorum"
        self.stdout.write(line)
        if status["state"] not in ("healthy",) and status["last_error"]:
            self.stdout.write(f"last error: {status['last_error'].splitlines()[0]}")

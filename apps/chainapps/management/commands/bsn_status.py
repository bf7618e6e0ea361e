"""bsn_status — a readable table of regions, apps, nodes and their states."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from apps.chainapps.models import ChainApp, Operation
from apps.chainapps.selectors import region_running_counts, regions_with_load


class Command(BaseCommand):
    help = "Show regions, apps, nodes and open operations."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="include deleted apps")

    def handle(self, *args, **options):
        out = self.stdout.write
        out("REGIONS  (from the reconciler's last pass: `bsn_reconcile` runs one now)")
        out(
            f"  {'CODE':<16} {'ENGINE':<12} {'DRIVER':<8} {'NODES':>9} {'WANTED':>6} {'RUNNING':>7} {'DRIFT':>5}"
            f" {'WARM':>7}  LAST SEEN            LAST ERROR / LAST ENGINE EVENT"
        )
        wanted = region_running_counts()
        for r in regions_with_load():
            seen = r.last_seen_at.strftime("%Y-%m-%d %H:%M:%S") if r.last_seen_at else "-"
            want, running = wanted.get(r.pk, (0, 0))
            error = (r.last_error or "-").splitlines()[0][:60] if r.last_error else "-"
            warm = f"{r.warm_ready}/{r.warm_nodes}" if r.warm_nodes else "-"  # ready / wanted
            out(
                f"  {r.code:<16} {r.status:<12} {r.driver:<8} {r.node_count:>4}/{r.max_nodes:<4} {want:>6} "
                f"{running:>7} {want - running:>5} {warm:>7}  {seen:<19}  {error}"
            )
            if r.last_event_at:
                out(f"  {'':<16} last engine event {r.last_event_at:%Y-%m-%d %H:%M:%S}: {r.last_event}")
        apps = (
            ChainApp.objects.select_related("tenant").prefetch_related("nodes__region").order_by("tenant__slug", "name")
        )
        if not options["all"]:
            apps = apps.filter(deleted_at__isnull=True)
        out("\nAPPS")
        out(f"  {'TENANT/APP':<32} {'STATUS':<13} {'DESIRED':<9} NODES (region: state endpoint)")
        for app in apps:
            nodes = ", ".join(f"{n.region.code}: {n.state} {n.endpoint or '-'}" for n in app.nodes.all())
            out(f"  {app.tenant.slug + '/' + app.name:<32} {app.status:<13} {app.desired_state:<9} {nodes or '-'}")
        ops = Operation.objects.open().select_related("app", "tenant")
        out("\nOPEN OPERATIONS")
        if not ops:
            out("  none")
        for op in ops:
            out(f"  {op.pk}  {op.kind:<9} {op.status:<8} {op.tenant.slug}/{op.app.name} attempts={op.attempts}")

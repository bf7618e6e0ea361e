"""bsn_region add|list|drain|enable|warm — manage node regions."""

from __future__ import annotations

import argparse
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.chainapps.selectors import regions_with_load
from apps.regions.engine_tls import EngineTLSInvalid, parse_tls
from apps.regions.models import Region
from apps.regions.services import RegionInvalid, region_add, region_set_status, region_update


class Command(BaseCommand):
    help = "Add, list, drain or enable node regions."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="register a region")
        add.add_argument("code")
        add.add_argument("--name", default="")
        add.add_argument("--city", default="")
        add.add_argument("--country", default="")
        add.add_argument("--operator", default="")
        add.add_argument("--driver", choices=[c for c, _ in Region.Driver.choices], default=Region.Driver.DOCKER)
        add.add_argument("--docker-url", default="", help="engine base URL (blank: local engine)")
        add.add_argument("--tls-ca", default="", metavar="FILE", help="PEM of the engine's CA (tcp:// engines)")
        add.add_argument("--tls-cert", default="", metavar="FILE", help="PEM of the client certificate")
        add.add_argument("--tls-key", default="", metavar="FILE", help="PEM of the client key (stored encrypted)")
        add.add_argument("--publish-host", default="127.0.0.1")
        add.add_argument(
            "--publish-mode",
            choices=[c for c, _ in Region.PublishMode.choices],
            default=Region.PublishMode.HOST,
            help="swarm regions: host port on the task's host (default) or the routing mesh",
        )
        add.add_argument(
            "--overlay-encryption",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="swarm regions: IPsec on the overlay networks between hosts (default); "
            "--no-overlay-encryption only on a private host network or kernels without ESP",
        )
        add.add_argument("--max-nodes", type=int, default=100)
        add.add_argument(
            "--warm-nodes", type=int, default=0, help="Docker regions: ledger containers kept started for new apps"
        )
        sub.add_parser("list", help="list regions")
        warm = sub.add_parser("warm", help="keep COUNT warm nodes started for new apps (0: none; Docker regions)")
        warm.add_argument("code")
        warm.add_argument("count", type=int)
        for name in ("drain", "enable"):
            p = sub.add_parser(name, help=f"{name} a region")
            p.add_argument("code")

    def handle(self, *args, action, **options):
        getattr(self, f"do_{action}")(**options)

    def do_add(self, code, **o):
        texts = []
        for option in ("tls_ca", "tls_cert", "tls_key"):
            path = o[option]
            try:
                texts.append(Path(path).read_text() if path else "")
            except OSError as exc:
                raise CommandError(f"--{option.replace('_', '-')} {path}: {exc.strerror}") from None
        try:
            region = region_add(
                code=code,
                tls=parse_tls(*texts),
                actor_label="manage.py",
                name=o["name"],
                city=o["city"],
                country=o["country"],
                operator=o["operator"],
                driver=o["driver"],
                docker_base_url=o["docker_url"],
                publish_host=o["publish_host"],
                publish_mode=o["publish_mode"],
                overlay_encryption=o["overlay_encryption"],
                max_nodes=o["max_nodes"],
                warm_nodes=o["warm_nodes"],
            )
        except (RegionInvalid, EngineTLSInvalid) as exc:
            raise CommandError(str(exc)) from None
        if region.warm_nodes:
            from apps.chainapps.warm import warm_fill_later

            warm_fill_later([region])
        self.stdout.write(
            f"added region {code} ({region.driver}), queue {region.queue}: running workers that serve every "
            f"region (bsn_worker without region codes) consume it within {settings.BSN_WORKER_FOLLOW_INTERVAL:g} s; "
            f"a worker started for chosen regions needs it named (bsn_worker {code} …)"
        )

    def do_list(self, **o):
        rows = regions_with_load()
        self.stdout.write(f"{'CODE':<16} {'STATUS':<12} {'DRIVER':<8} {'NODES':>9} {'WARM':>7}  NAME")
        for r in rows:
            warm = f"{r.warm_ready}/{r.warm_nodes}" if r.warm_nodes else "-"
            self.stdout.write(
                f"{r.code:<16} {r.status:<12} {r.driver:<8} {r.node_count:>4}/{r.max_nodes:<4} {warm:>7}  {r.name}"
            )

    def _set_status(self, code: str, status: str) -> None:
        # The same service as the console's drain / enable actions (audited there).
        try:
            region_set_status(code=code, status=status, actor_label="manage.py")
        except RegionInvalid as exc:
            raise CommandError("; ".join(" ".join(m) for m in exc.errors.values())) from None
        self.stdout.write(f"region {code} is now {status}")

    def do_drain(self, code, **o):
        self._set_status(code, Region.Status.DRAINING)

    def do_enable(self, code, **o):
        self._set_status(code, Region.Status.ACTIVE)

    def do_warm(self, code, count, **o):
        region = Region.objects.filter(code=code).first()
        if region is None:
            raise CommandError(f"no region {code}")
        try:
            region_update(region=region, actor_label="manage.py", warm_nodes=count)
        except RegionInvalid as exc:
            raise CommandError("; ".join(" ".join(m) for m in exc.errors.values())) from None
        self.stdout.write(
            f"region {code} keeps {count} warm node(s) per built-in framework; its worker "
            f"(queue {region.queue}) makes or drops them now"
        )

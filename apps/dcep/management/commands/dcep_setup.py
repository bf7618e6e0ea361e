"""dcep_setup — the central bank, N operator banks with owners, the tier-1 app, demo wallets; print tokens."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from rest_framework.exceptions import APIException

from apps.common.errors import DomainError
from apps.dcep import setup
from apps.dcep.models import Institution
from apps.regions.models import Region
from apps.regions.services import demo_regions_seed, driver_pick
from apps.tenants.services import token_replace


class Command(BaseCommand):
    help = (
        "Idempotent: the central bank (pboc) and operator banks bank-1..bank-N, each with an owner user, the "
        "tier-1 chain app (waits until it runs unless --wait 0) and M demo wallets; prints each institution "
        "with its owner and a fresh API token."
    )

    def add_arguments(self, parser):
        parser.add_argument("--operators", type=int, default=2, help="operator banks bank-1..bank-N (default 2)")
        parser.add_argument("--wallets", type=int, default=4, help="demo wallets on the first run (default 4)")
        parser.add_argument(
            "--wait", type=float, default=120, help="seconds to wait for the tier-1 app (default 120; 0: do not wait)"
        )
        parser.add_argument(
            "--driver",
            choices=["auto", "docker", "process"],
            default=settings.BSN_DEFAULT_DRIVER,
            help="driver of the demo regions, seeded only when no region is active",
        )

    def handle(self, *args, operators, wallets, wait, driver, **options):
        if not 1 <= operators <= 50:
            raise CommandError("--operators must be between 1 and 50")
        if not 0 <= wallets <= 1000:
            raise CommandError("--wallets must be between 0 and 1000")
        if wait < 0:
            raise CommandError("--wait must be 0 or more seconds")
        regions = list(Region.objects.accepting().order_by("code"))
        if not regions:
            chosen = driver_pick(driver)
            seeded = demo_regions_seed(driver=chosen)
            self.stdout.write(f"no active region: seeded {', '.join(r.code for r in seeded)} (driver: {chosen})")
            regions = list(Region.objects.accepting().order_by("code"))
        try:
            institutions = setup.institutions_ensure(operators=operators, regions=regions)
            owned = [setup.owner_ensure(inst) for inst in institutions]
            tier1_regions = setup.tier1_regions(institutions)
            chain = setup.tier1_ensure(regions=tier1_regions)
        except (ValueError, APIException, DomainError) as exc:
            raise CommandError(_message(exc)) from exc
        self.stdout.write(f"tier-1 app {chain.app_id} in {', '.join(r.code for r in tier1_regions)}")

        ready = False
        if wait > 0:
            try:
                ready = setup.tier1_wait(chain, seconds=wait, progress=self.stdout.write)
            except RuntimeError as exc:
                raise CommandError(str(exc)) from exc

        banks = [i for i in institutions if i.kind == Institution.Kind.OPERATOR_BANK]
        opened = setup.demo_wallets_open(count=wallets, operators=banks)
        for wallet in opened:
            self.stdout.write(f"opened wallet {wallet.number} at {wallet.operator.slug} (tier {wallet.tier})")

        self.stdout.write("")
        self.stdout.write(f"{'INSTITUTION':<12} {'KIND':<14} {'HOME':<14} {'OWNER':<12} {'PASSWORD':<18} TOKEN")
        for row in owned:
            inst = row.institution
            # A fresh token each run; the owner keeps the last five, older ones are revoked.
            token = token_replace(membership=row.membership, name="dcep-setup", keep=4).secret
            home = inst.home_region.code if inst.home_region else "-"
            password = row.password or "(unchanged)"
            self.stdout.write(
                f"{inst.slug:<12} {inst.kind:<14} {home:<14} {row.membership.user.username:<12} {password:<18} {token}"
            )
        self.stdout.write("")
        if ready:
            self.stdout.write("the tier-1 chain runs: issue with POST /api/v1/dcep/issuances (docs/dcep.md)")
        elif wait > 0:
            raise CommandError(
                f"the tier-1 app is not running after {wait:g} s; money calls answer 503 with Retry-After until it does"
            )
        else:
            self.stdout.write(
                "the tier-1 app is provisioned by the worker: until it runs, money calls answer 503 with Retry-After"
            )


def _message(exc: Exception) -> str:
    detail = getattr(exc, "detail", exc)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in detail.items())
    return str(detail)

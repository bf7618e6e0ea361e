"""Setting up a DCEP installation (``manage.py dcep_setup``): institutions with owners, tier 1, demo wallets.

Every function is idempotent, so the command can be run again at any time: an existing
institution, owner or tier-1 app is kept as it is.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.exceptions import ValidationError

from apps.chainapps.models import ChainApp, Operation
from apps.chainapps.services import ordering_for
from apps.dcep import services
from apps.dcep.institutions import institution_ensure, tier1_provision, tier1_register_signer
from apps.dcep.models import Account, Institution, Tier1Chain
from apps.regions.models import Region
from apps.tenants.models import Membership, Role

CENTRAL_BANK_SLUG = "pboc"
READY = (ChainApp.Status.RUNNING, ChainApp.Status.DEGRADED)


@dataclass(frozen=True)
class Owned:
    """An institution and its owner; ``password`` is set only when the user was created now."""

    institution: Institution
    membership: Membership
    password: str | None


def operator_slug(n: int) -> str:
    return f"bank-{n}"


def institutions_ensure(*, operators: int, regions: list[Region]) -> list[Institution]:
    """The central bank and ``bank-1``…``bank-N``, home regions spread round-robin over ``regions``."""
    if not regions:
        raise ValueError("no active region to place the institutions in")
    wanted = [(CENTRAL_BANK_SLUG, "Central Bank", Institution.Kind.CENTRAL_BANK)]
    for n in range(1, operators + 1):
        wanted.append((operator_slug(n), f"Operator Bank {n}", Institution.Kind.OPERATOR_BANK))
    return [
        institution_ensure(slug=slug, name=name, kind=kind, home_region=regions[i % len(regions)])
        for i, (slug, name, kind) in enumerate(wanted)
    ]


def owner_ensure(institution: Institution) -> Owned:
    """The user named like the institution's slug, owner of its tenant (created with a random password)."""
    User = get_user_model()
    slug = institution.slug
    password = None
    with transaction.atomic():
        user = User.objects.filter(username=slug).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = User.objects.create_user(username=slug, email=f"{slug}@example.test", password=password)
        membership, _ = Membership.objects.get_or_create(
            tenant=institution.tenant, user=user, defaults={"role": Role.OWNER}
        )
        if membership.role != Role.OWNER:  # named as the owner: money calls need developer or above
            membership.role = Role.OWNER
            membership.save(update_fields=["role", "updated_at"])
    return Owned(institution=institution, membership=membership, password=password)


def tier1_regions(institutions: list[Institution]) -> list[Region]:
    """The distinct active home regions; only the central bank's when they cannot share an ordering.

    A multi-region app needs the etcd ordering service, which runs only on Docker regions
    (``chainapps.services.ordering_for``); with process regions tier 1 gets one node.
    """
    regions: list[Region] = []
    for inst in institutions:
        region = inst.home_region
        if region is not None and region.status == Region.Status.ACTIVE and region not in regions:
            regions.append(region)
    if len(regions) > 1:
        try:
            ordering_for(regions)
        except ValidationError:
            return regions[:1]
    return regions


def tier1_ensure(*, regions: list[Region]) -> Tier1Chain:
    """The tier-1 app, created once; provisioning is enqueued when this commits."""
    # One transaction: the app and its Tier1Chain row exist together or not at all.
    with transaction.atomic():
        return tier1_provision(regions=regions)


def tier1_wait(chain: Tier1Chain, *, seconds: float, progress: Callable[[str], None]) -> bool:
    """Wait until the tier-1 app runs and the central bank's key is registered; False on timeout.

    Raises RuntimeError when provisioning failed for good.
    """
    deadline = time.monotonic() + seconds
    last_status, seen_lines = None, 0
    while True:
        app = ChainApp.objects.get(pk=chain.app_id)
        if app.status != last_status:
            progress(f"tier-1 app {app.pk}: {app.status}")
            last_status = app.status
        if app.status in READY:
            if tier1_register_signer(chain):
                progress(f"central bank's key registered on the tier-1 app as {chain.signer}")
                return True
        else:  # provisioning still going: show its steps as they come, stop on a failure for good
            operation = Operation.objects.filter(app=app).order_by("-created_at").first()
            if operation is not None:
                for line in operation.log[seen_lines:]:
                    progress(f"  {line.get('message', line)}")
                seen_lines = len(operation.log)
                if app.status == ChainApp.Status.FAILED or operation.status == Operation.Status.FAILED:
                    raise RuntimeError(f"tier-1 provisioning failed: {operation.last_error or app.status}")
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


def demo_wallets_open(*, count: int, operators: list[Institution]) -> list[Account]:
    """``count`` tier-2 personal wallets round-robin over ``operators``, only when there is no wallet yet."""
    if count <= 0 or not operators or Account.objects.filter(kind=Account.Kind.WALLET).exists():
        return []
    wallets = []
    for i in range(count):
        operator = operators[i % len(operators)]
        actor = services.Actor(tenant=operator.tenant, institution=operator)
        wallets.append(services.wallet_open(actor=actor, holder_name=f"Demo holder {i + 1}", tier=2, kind="personal"))
    return wallets

"""Setting DCEP up: institutions with their accounts, and the platform's tier-1 chain app."""

from __future__ import annotations

import logging

from django.db import transaction

from apps.audit.services import audit_record
from apps.chainapps.keys import key_generate
from apps.chainapps.models import ChainApp
from apps.chainapps.services import ChainAppSpec, chainapp_create
from apps.dcep.models import Account, Institution, Tier1Chain
from apps.regions.models import Region
from apps.tenants.models import Tenant

logger = logging.getLogger(__name__)

PLATFORM_SLUG = "platform"
TIER1_APP_NAME = "dcep-tier1"
SIGNER = "central-bank"


def institution_ensure(*, slug: str, name: str, kind: str, home_region: Region | None) -> Institution:
    """The institution (and its tenant and accounts), created if missing. Idempotent."""
    with transaction.atomic():
        tenant, _ = Tenant.objects.get_or_create(slug=slug, defaults={"name": name, "kind": kind})
        if tenant.kind != kind:
            raise ValueError(f"tenant {slug} exists with kind {tenant.kind}, not {kind}")
        inst = Institution.objects.filter(tenant=tenant).first()
        if inst is None:
            fields = {"tenant": tenant, "kind": kind, "home_region": home_region}
            if kind == Institution.Kind.CENTRAL_BANK:
                key = key_generate()
                fields.update(
                    signing_public_key=key.public_key, signing_private_key_encrypted=key.private_key_encrypted
                )
            inst = Institution.objects.create(**fields)
            audit_record(
                action="dcep.institution.create", object_type="institution", object_id=slug, tenant=tenant,
                actor=None, data={"kind": kind, "home_region": home_region.code if home_region else None},
            )  # fmt: skip
        if kind == Institution.Kind.OPERATOR_BANK:
            Account.objects.get_or_create(kind=Account.Kind.VAULT, operator=inst)
        else:
            Account.objects.get_or_create(kind=Account.Kind.ISSUANCE)
    return inst


def tier1_provision(*, regions: list[Region]) -> Tier1Chain:
    """The platform's tier-1 app (``dcep`` contract, a node per region), created once."""
    existing = Tier1Chain.objects.select_related("app").first()
    if existing is not None:
        return existing
    platform, _ = Tenant.objects.get_or_create(
        slug=PLATFORM_SLUG, defaults={"name": "Platform", "kind": Tenant.Kind.PLATFORM}
    )
    spec = ChainAppSpec(
        name=TIER1_APP_NAME,
        framework="bsn-ledger",
        regions=[r.code for r in regions],
        description="DCEP tier 1: the central bank's allocations to operator banks (run by the platform)",
        contract_template="dcep",
        contract_params={"central_bank": SIGNER},
    )
    with transaction.atomic():  # the app and its Tier1Chain row exist together or not at all
        operation = chainapp_create(tenant=platform, actor=None, spec=spec)
        return Tier1Chain.objects.create(app=operation.app, signer=SIGNER)


def tier1_register_signer(chain: Tier1Chain) -> bool:
    """Register the central bank's key on the tier-1 app once it runs; True when registered."""
    if chain.signer_registered:
        return True
    app = ChainApp.objects.get(pk=chain.app_id)
    if app.status not in (ChainApp.Status.RUNNING, ChainApp.Status.DEGRADED):
        return False
    from apps.common.errors import Conflict
    from apps.gateway.errors import GatewayError
    from apps.gateway.models import AppUser
    from apps.gateway.services import appuser_create

    bank = Institution.objects.get(kind=Institution.Kind.CENTRAL_BANK)
    try:
        appuser_create(app=app, actor=None, name=chain.signer, public_key=bank.signing_public_key)
    except GatewayError as exc:
        logger.info("tier-1 signer not registered yet: %s", exc.detail)
        return False
    except Conflict:  # registered already (an earlier run)
        if not AppUser.objects.filter(app=app, name=chain.signer, status=AppUser.Status.ACTIVE).exists():
            return False
    Tier1Chain.objects.filter(pk=chain.pk).update(signer_registered=True)
    chain.signer_registered = True
    return True

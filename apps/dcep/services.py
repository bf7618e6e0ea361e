"""Tier-2 writes: wallets, exchanges, redemptions, payments (single and batch) and holds.

Every function runs in one database transaction and uses the ``Journal`` (lock the
accounts involved in id order, check the rules in memory, write set-wise). Tier-1 writes
(issuance, withdrawal) are in ``apps.dcep.tier1``, settlement in ``apps.dcep.settlement``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from functools import cached_property

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common.errors import DomainError
from apps.dcep.errors import Invalid, NotFound, refusal
from apps.dcep.journal import Acc, Journal
from apps.dcep.models import Account, Hold, Institution
from apps.dcep.programmable import ReleaseRule, rule_of
from apps.dcep.selectors import institution_of
from apps.dcep.tiers import caps, new_wallet_number
from apps.tenants.models import Tenant


@dataclass(frozen=True)
class Actor:
    """Who is calling: the tenant and, for banks, its institution."""

    tenant: Tenant
    institution: Institution | None = None
    user: object | None = None

    @classmethod
    def of(cls, tenant: Tenant, user=None) -> Actor:
        return cls(tenant=tenant, institution=institution_of(tenant), user=user)

    @cached_property  # asked for twice a payment of a batch; the actor never changes (frozen)
    def operator_id(self) -> int | None:
        inst = self.institution
        return inst.pk if inst is not None and inst.kind == Institution.Kind.OPERATOR_BANK else None

    @property
    def owner(self) -> tuple:
        """(operator id, tenant id): the wallets this actor may debit are operated or held by it."""
        return (self.operator_id, self.tenant.pk if self.tenant is not None else None)

    @property
    def is_central_bank(self) -> bool:
        return self.institution is not None and self.institution.kind == Institution.Kind.CENTRAL_BANK

    def operates(self, acc: Acc) -> bool:
        return self.operator_id is not None and acc.operator_id == self.operator_id

    def may_debit(self, acc: Acc | Account) -> bool:
        """The operator of the wallet, or the enterprise the corporate wallet was opened for."""
        if acc.kind != Account.Kind.WALLET:
            return False
        return self.operates(acc) or (acc.holder_tenant_id is not None and acc.holder_tenant_id == self.tenant.pk)


def require_operator(actor: Actor) -> Institution:
    if actor.operator_id is None:
        raise refusal("operator-only", "Only an operator bank may do this.", status=403)
    return actor.institution


# --------------------------------------------------------------------------- rules


def _status_error(acc: Acc, field: str) -> DomainError | None:
    if acc.status == Account.Status.FROZEN:
        return refusal("wallet-frozen", f"{field} {acc.number} is frozen.")
    if acc.status == Account.Status.CLOSED:
        return refusal("wallet-closed", f"{field} {acc.number} is closed.")
    return None


def check_outgoing(src: Acc, amount: int, today: dt.date) -> DomainError | None:
    error = _status_error(src, "from_wallet")
    if error:
        return error
    limits = caps(src.tier)
    if limits.single is not None and amount > limits.single:
        return refusal(
            "over-single-cap", f"{amount} fen is over the tier-{src.tier} single-payment cap of {limits.single}."
        )
    if limits.daily is not None and src.spent_today(today) + amount > limits.daily:
        return refusal(
            "over-daily-cap",
            f"{amount} fen would take today's outgoing total over the tier-{src.tier} daily cap of {limits.daily} "
            f"({src.spent_today(today)} already sent).",
        )
    if src.balance < amount:
        return refusal(
            "insufficient-funds", f"from_wallet {src.number} has {src.balance} fen available, needs {amount}."
        )
    return None


def check_incoming(dst: Acc, amount: int) -> DomainError | None:
    error = _status_error(dst, "to_wallet")
    if error:
        return error
    limits = caps(dst.tier)
    if limits.balance is not None and dst.total + amount > limits.balance:
        return refusal(
            "over-balance-cap",
            f"{amount} fen would take to_wallet {dst.number} over its tier-{dst.tier} balance cap of {limits.balance}.",
        )
    return None


def check_payment(src: Acc, dst: Acc, amount: int, today: dt.date) -> DomainError | None:
    if src.id == dst.id:
        return refusal("same-wallet", "from_wallet and to_wallet are the same wallet.", status=400)
    return (
        _status_error(src, "from_wallet")
        or _status_error(dst, "to_wallet")
        or check_outgoing(src, amount, today)
        or check_incoming(dst, amount)
    )


def _obligation(src: Acc, dst: Acc, amount: int) -> tuple[int, int, int] | None:
    if src.operator_id != dst.operator_id:
        return (src.operator_id, dst.operator_id, amount)
    return None


def _debit_wallet(j: Journal, actor: Actor, number: str, field: str = "from_wallet") -> Acc:
    acc = j.by_number(number)
    if acc is None or not actor.may_debit(acc):
        raise NotFound(f"{field} {number} does not exist or is not yours.")
    return acc


def _any_wallet(j: Journal, number: str, field: str = "to_wallet") -> Acc:
    acc = j.by_number(number)
    if acc is None or acc.kind != Account.Kind.WALLET:
        raise NotFound(f"{field} {number} does not exist.")
    return acc


# --------------------------------------------------------------------------- wallets


def wallet_open(*, actor: Actor, holder_name: str, tier: int, kind: str, holder_tenant: str | None = None) -> Account:
    operator = require_operator(actor)
    tenant = None
    if holder_tenant:
        tenant = Tenant.objects.filter(slug=holder_tenant, is_active=True).first()
        if tenant is None:
            raise Invalid("holder_tenant", f"no active tenant '{holder_tenant}'")
        if kind != Account.WalletKind.CORPORATE:
            raise Invalid("holder_tenant", "only a corporate wallet is held by a tenant")
    with transaction.atomic():
        for _ in range(10):  # 10^14 numbers: a clash is rare, and the unique index catches it
            number = new_wallet_number()
            if not Account.objects.filter(number=number).exists():
                break
        wallet = Account.objects.create(
            kind=Account.Kind.WALLET,
            operator=operator,
            number=number,
            holder_name=holder_name,
            holder_tenant=tenant,
            wallet_kind=kind,
            tier=tier,
        )
        audit_record(
            action="dcep.wallet.open",
            object_type="wallet",
            object_id=wallet.number,
            tenant=actor.tenant,
            actor=actor.user,
            data={"tier": tier, "kind": kind, "holder_tenant": holder_tenant},
        )
    return wallet


def wallet_update(*, actor: Actor, number: str, tier: int | None = None, status: str | None = None) -> Account:
    require_operator(actor)
    with transaction.atomic():
        j = Journal()
        j.lock(own=[number], owner=(actor.operator_id, None))
        acc = j.by_number(number)
        if acc is None or not actor.operates(acc):
            raise NotFound(f"wallet {number} does not exist.")
        # Closed is final: only a repeat of {"status": "closed"} passes, never with a new tier.
        if acc.status == Account.Status.CLOSED and (
            status != Account.Status.CLOSED or (tier is not None and tier != acc.tier)
        ):
            raise refusal("wallet-closed", f"wallet {number} is closed for good.")
        changes = {}
        if tier is not None and tier != acc.tier:
            changes["tier"] = tier
        if status is not None and status != acc.status:
            if status == Account.Status.CLOSED and (acc.balance or acc.held):
                raise refusal(
                    "wallet-not-empty",
                    f"wallet {number} still holds {acc.balance} fen and {acc.held} fen held; redeem it first.",
                )
            changes["status"] = status
        if changes:
            Account.objects.filter(pk=acc.id).update(**changes, updated_at=timezone.now())
            audit_record(
                action="dcep.wallet.update",
                object_type="wallet",
                object_id=number,
                tenant=actor.tenant,
                actor=actor.user,
                data=changes,
            )
    return Account.objects.get(pk=acc.id)


# --------------------------------------------------------------------------- vault <-> wallet


def exchange_create(*, actor: Actor, wallet: str, amount: int) -> dict:
    """The operator's vault → a wallet it operates (the holder paid with a bank deposit)."""
    operator = require_operator(actor)
    with transaction.atomic():
        j = Journal()
        j.lock(own=[wallet], owner=(operator.pk, None), vault_of=[operator.pk])
        dst = j.by_number(wallet)
        if dst is None or not actor.operates(dst):
            raise NotFound(f"wallet {wallet} does not exist.")
        vault = j.vault(operator.pk)
        if vault.balance < amount:
            raise refusal("insufficient-funds", f"the vault holds {vault.balance} fen, needs {amount}.")
        error = check_incoming(dst, amount)
        if error:
            raise error
        transfer = j.post(kind="exchange", amount=amount, source=vault, target=dst)
        j.flush()
    return transfer


def redemption_create(*, actor: Actor, wallet: str, amount: int) -> dict:
    """A wallet → its operator's vault (the holder is paid out to a bank deposit)."""
    operator = require_operator(actor)
    with transaction.atomic():
        j = Journal()
        j.lock(own=[wallet], owner=(operator.pk, None), vault_of=[operator.pk])
        src = j.by_number(wallet)
        if src is None or not actor.operates(src):
            raise NotFound(f"wallet {wallet} does not exist.")
        error = _status_error(src, "wallet")
        if error:
            raise error
        if src.balance < amount:
            raise refusal("insufficient-funds", f"wallet {wallet} has {src.balance} fen available, needs {amount}.")
        transfer = j.post(kind="redemption", amount=amount, source=src, target=j.vault(operator.pk))
        j.flush()
    return transfer


# --------------------------------------------------------------------------- payments


def _pay(j: Journal, src: Acc, dst: Acc, amount: int, memo: str) -> dict:
    src.add_out_today(j.today, amount)
    return j.post(
        kind="payment", amount=amount, source=src, target=dst, memo=memo, obligation=_obligation(src, dst, amount)
    )


def payment_create(*, actor: Actor, from_wallet: str, to_wallet: str, amount: int, memo: str = "") -> dict:
    # No savepoint of its own (two statements less a payment, the hottest path): a refusal is
    # found before anything is written and raised after the block, so it never needs a
    # rollback here; any other error rolls back the caller's transaction as a whole.
    with transaction.atomic(savepoint=False):
        j = Journal()
        j.lock(own=[from_wallet], numbers=[to_wallet], owner=actor.owner)
        try:
            src = _debit_wallet(j, actor, from_wallet)
            dst = _any_wallet(j, to_wallet)
            error = check_payment(src, dst, amount, j.today)
        except DomainError as exc:
            error = exc
        if error is None:
            transfer = _pay(j, src, dst, amount, memo)
            j.flush()
    if error is not None:
        raise error
    return transfer


@dataclass
class BatchResult:
    applied: bool
    results: list[dict]  # one per payment, in order: {"transfer": …} or {"error": DomainError}


def payment_batch(*, actor: Actor, payments: list[dict], linked: bool) -> BatchResult:
    """Apply payments in order, set-wise: one lock of every wallet involved, one write.

    Unlinked: each payment stands alone (refused ones are skipped). Linked: all or nothing.
    """
    payers = {p["from_wallet"] for p in payments}
    payees = {p["to_wallet"] for p in payments}
    with transaction.atomic():
        j = Journal()
        j.lock(own=payers - payees, numbers=payees, owner=actor.owner)
        results: list[dict] = []
        failed = False
        for p in payments:
            try:
                src = _debit_wallet(j, actor, p["from_wallet"])
                dst = _any_wallet(j, p["to_wallet"])
                error = check_payment(src, dst, p["amount"], j.today)
            except NotFound as exc:
                error = exc
            if error is not None:
                results.append({"error": error})
                failed = True
                if linked:
                    break
                continue
            results.append({"transfer": _pay(j, src, dst, p["amount"], p.get("memo", ""))})
        if linked and failed:
            transaction.set_rollback(True)  # nothing of a failed linked batch is written
            return BatchResult(applied=False, results=results)
        j.flush()
    return BatchResult(applied=True, results=results)


# --------------------------------------------------------------------------- holds


def _locked_hold(actor: Actor, hold_id) -> Hold:
    try:
        uuid.UUID(str(hold_id))
    except ValueError:
        raise NotFound("No such hold.") from None
    # Only the hold row: locking the joined wallet here would take it out of id order.
    hold = Hold.objects.select_for_update(of=("self",)).select_related("from_account").filter(pk=hold_id).first()
    if hold is None:
        raise NotFound("No such hold.")
    if not actor.may_debit(hold.from_account):
        raise NotFound("No such hold.")
    return hold


def _check_unresolved(hold: Hold) -> None:
    """``hold-expired`` for a hold past its expiry, swept yet or not (the answer does not depend
    on when the sweep ran); ``hold-resolved`` once captured or voided."""
    if hold.status == Hold.Status.EXPIRED or (hold.status == Hold.Status.PENDING and hold.expires_at <= timezone.now()):
        raise refusal("hold-expired", "This hold expired; its funds are released to the payer.")
    if hold.status != Hold.Status.PENDING:
        raise refusal("hold-resolved", f"This hold is already {hold.status}.")


def hold_create(
    *,
    actor: Actor,
    from_wallet: str,
    to_wallet: str,
    amount: int,
    expires_in_s: int,
    release_on: ReleaseRule | None = None,
) -> Hold:
    """Reserve ``amount``; with ``release_on`` the hold is also captured or voided by chain events
    (apps.dcep.programmable), whose app the caller resolved through the API's tenancy scope."""
    if release_on is not None:
        release_on.check()
    with transaction.atomic():
        j = Journal()
        j.lock(own=[from_wallet], numbers=[to_wallet], owner=actor.owner)
        src = _debit_wallet(j, actor, from_wallet)
        dst = _any_wallet(j, to_wallet)
        error = check_payment(src, dst, amount, j.today)
        if error:
            raise error
        account = j.new_hold_account(src.operator_id, src.holder_tenant_id)
        hold = Hold.objects.create(
            account_id=account.id,
            from_account_id=src.id,
            to_account_id=dst.id,
            amount=amount,
            expires_at=j.now + dt.timedelta(seconds=expires_in_s),
            **(release_on.hold_fields() if release_on is not None else {}),
        )
        src.add_out_today(j.today, amount)
        src.held += amount
        j.post(kind="hold", amount=amount, source=src, target=account, hold_id=hold.pk)
        j.flush()
        if release_on is not None:
            # Plain holds are not audited (the journal is their record); one that a chain event
            # of another party's app may pay out is an authorisation worth its audit line.
            audit_record(
                action="dcep.hold.bind",
                object_type="hold",
                object_id=str(hold.pk),
                tenant=actor.tenant,
                actor=actor.user,
                data={"amount": amount, "from_wallet": from_wallet, "to_wallet": to_wallet, **rule_of(hold)},
            )
    return hold


def _release(j: Journal, hold: Hold, src: Acc, account: Acc) -> dict:
    src.held -= hold.amount
    return j.post(kind="release", amount=hold.amount, source=account, target=src, hold_id=hold.pk)


def hold_capture(*, actor: Actor, hold_id, amount: int | None = None) -> Hold:
    with transaction.atomic():
        hold = _locked_hold(actor, hold_id)
        now = timezone.now()
        _check_unresolved(hold)
        value = hold.amount if amount is None else amount
        if not 0 < value <= hold.amount:
            raise Invalid("amount", f"between 1 and the held {hold.amount} fen")
        capture_locked(hold, value, now)
    return hold


def capture_locked(hold: Hold, value: int, now: dt.datetime) -> None:
    """Capture ``value`` of a pending hold whose row the caller locked (FOR UPDATE) in its transaction.

    A refusal of the payee's wallet (frozen, closed, over its cap) is raised before anything is written.
    """
    j = Journal()
    j.lock(ids=[hold.account_id, hold.from_account_id, hold.to_account_id])
    account, src, dst = (
        j.accounts[hold.account_id],
        j.accounts[hold.from_account_id],
        j.accounts[hold.to_account_id],
    )
    error = check_incoming(dst, value)
    if error:
        raise error
    rest = hold.amount - value
    src.held -= hold.amount
    src.dirty = True  # a whole capture posts no leg to the payer, but its `held` still falls
    legs = [(account, -hold.amount), (dst, value)] + ([(src, rest)] if rest else [])
    j.post(
        kind="capture",
        amount=value,
        source=account,
        target=dst,
        legs=legs,
        hold_id=hold.pk,
        obligation=_obligation(src, dst, value),
    )
    j.flush()
    hold.status, hold.captured, hold.resolved_at = Hold.Status.CAPTURED, value, now
    hold.save(update_fields=["status", "captured", "resolved_at", "released_by", "updated_at"])


def hold_void(*, actor: Actor, hold_id) -> Hold:
    with transaction.atomic():
        hold = _locked_hold(actor, hold_id)
        _check_unresolved(hold)
        resolve_locked(hold, Hold.Status.VOIDED)
    return hold


def resolve_locked(hold: Hold, status: str) -> None:
    """Release a pending hold (void or expiry) whose row the caller locked in its transaction."""
    j = Journal()
    j.lock(ids=[hold.account_id, hold.from_account_id])
    _release(j, hold, j.accounts[hold.from_account_id], j.accounts[hold.account_id])
    j.flush()
    hold.status, hold.resolved_at = status, j.now
    hold.save(update_fields=["status", "resolved_at", "released_by", "updated_at"])


def holds_expire(*, limit: int = 500) -> int:
    """Release every pending hold past its expiry (beat runs this every few seconds)."""
    released = 0
    ids = list(
        Hold.objects.filter(status=Hold.Status.PENDING, expires_at__lte=timezone.now()).values_list("pk", flat=True)[
            :limit
        ]
    )
    for hold_id in ids:
        with transaction.atomic():
            hold = Hold.objects.select_for_update().filter(pk=hold_id, status=Hold.Status.PENDING).first()
            if hold is None or hold.expires_at > timezone.now():
                continue
            resolve_locked(hold, Hold.Status.EXPIRED)
            released += 1
    return released

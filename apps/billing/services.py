"""Billing writes: prices, month close (invoices), payment in DCEP, suspension and resumption.

Every function takes ``now`` (aware UTC) so that the beat tasks and the tests inject time;
every one is idempotent (a second run finds the work done and changes nothing).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone
from rest_framework.exceptions import APIException

from apps.audit.services import audit_record
from apps.billing import pricing
from apps.billing.errors import refusal
from apps.billing.models import BillingAccount, Invoice, InvoiceLine, PriceList, SuspendedApp, Suspension
from apps.chainapps.models import ChainApp
from apps.chainapps.services import chainapp_start, chainapp_stop
from apps.common.errors import DomainError
from apps.dcep.models import Account
from apps.dcep.services import Actor, payment_create
from apps.metering.models import UsageHour
from apps.regions.models import Region
from apps.tenants.models import Tenant

logger = logging.getLogger(__name__)

# What chainapps' start/stop refuse with (a busy or deleted app): it raises DRF's Conflict today.
_REFUSED = (DomainError, APIException)


def _log_line(now: dt.datetime, message: str) -> dict:
    return {"at": now.isoformat(), "message": message}


# --------------------------------------------------------------------------- prices


def price_check(*, valid_from: dt.datetime, operator_share_bp: int, now: dt.datetime | None = None) -> dt.datetime:
    """``valid_from`` in UTC if a price may start then (the start of an hour, not past); refuses otherwise."""
    now = now or timezone.now()
    if valid_from.tzinfo is None:
        raise refusal("invalid", "valid_from needs a time zone (UTC).", status=400)
    valid_from = valid_from.astimezone(dt.UTC)
    if valid_from.minute or valid_from.second or valid_from.microsecond:
        raise refusal("invalid", "valid_from must be the start of an hour (prices apply per hour of usage).", 400)
    # A price never applies to an hour already past: issued invoices and the month being
    # metered keep the prices they were counted with.
    if valid_from < now.replace(minute=0, second=0, microsecond=0):
        raise refusal("price-in-past", "valid_from is in the past; a price change applies from now on.")
    if not 0 <= operator_share_bp <= 10_000:
        raise refusal("invalid", "operator_share_bp: between 0 and 10000 (basis points).", 400)
    return valid_from


def price_set(
    *,
    region_code: str,
    valid_from: dt.datetime,
    node_hour_fen: int,
    per_1000_tx_fen: int,
    gb_month_fen: int,
    operator_share_bp: int,
    actor=None,
    now: dt.datetime | None = None,
    request=None,
) -> PriceList:
    """A new price list for a region from ``valid_from`` (the start of an hour, not in the past)."""
    region = Region.objects.filter(code=region_code).first()
    if region is None:
        raise refusal("not-found", f"No region '{region_code}'.", status=404)
    valid_from = price_check(valid_from=valid_from, operator_share_bp=operator_share_bp, now=now)
    try:
        with transaction.atomic():
            price = PriceList.objects.create(
                region=region,
                valid_from=valid_from,
                node_hour_fen=node_hour_fen,
                per_1000_tx_fen=per_1000_tx_fen,
                gb_month_fen=gb_month_fen,
                operator_share_bp=operator_share_bp,
                created_by=actor if getattr(actor, "pk", None) else None,
            )
            audit_record(
                action="billing.price.set",
                object_type="price_list",
                object_id=str(price.pk),
                actor=actor,
                data={
                    "region": region.code,
                    "valid_from": valid_from.isoformat(),
                    "node_hour_fen": node_hour_fen,
                    "per_1000_tx_fen": per_1000_tx_fen,
                    "gb_month_fen": gb_month_fen,
                    "operator_share_bp": operator_share_bp,
                },
                request=request,
            )
    except IntegrityError:
        raise refusal(
            "price-exists", f"{region.code} already has a price list from {valid_from.isoformat()}."
        ) from None
    return price


# --------------------------------------------------------------------------- invoices


def first_of_month(value: dt.date | dt.datetime) -> dt.date:
    return dt.date(value.year, value.month, 1)


def previous_month(now: dt.datetime) -> dt.date:
    first = first_of_month(now)
    return first_of_month(first - dt.timedelta(days=1))


def _compute_lines(tenant: Tenant, month: dt.date) -> list[InvoiceLine]:
    """The month's priced lines of one tenant: per app, region, price period and kind."""
    start, end = pricing.month_bounds(month)
    hours = pricing.hours_in(month)
    usage = UsageHour.objects.filter(app__tenant=tenant, hour__gte=start, hour__lt=end)
    region_ids = sorted(set(usage.values_list("region_id", flat=True)))
    lines: list[InvoiceLine] = []
    regions = Region.objects.in_bulk(region_ids)
    for region_id in region_ids:
        region = regions[region_id]
        prices = list(PriceList.objects.filter(region=region, valid_from__lt=end).order_by("valid_from"))
        in_force = [p for p in prices if p.valid_from <= start]
        later = [p for p in prices if p.valid_from > start]
        spans, unpriced_until = pricing.periods(in_force[-1:] + later, start, end)
        if unpriced_until is not None and usage.filter(region=region, hour__lt=unpriced_until).exists():
            raise refusal(
                "no-price",
                f"Region {region.code} has usage before its first price list ({unpriced_until.isoformat()}); "
                "set one with bsn_billing price set.",
            )
        for span in spans:
            rows = (
                usage.filter(region=region, hour__gte=span.start, hour__lt=span.end)
                .values("app_id", "app__name")
                .annotate(seconds=Sum("node_seconds"), tx=Sum("tx_committed"), byte_hours=Sum("storage_bytes"))
                .order_by("app__name", "app_id")
            )
            for row in rows:
                price = span.price
                quantities = (
                    (InvoiceLine.Kind.NODE_HOURS, pricing.node_hours(row["seconds"] or 0), price.node_hour_fen),
                    (InvoiceLine.Kind.TRANSACTIONS, pricing.thousand_tx(row["tx"] or 0), price.per_1000_tx_fen),
                    (
                        InvoiceLine.Kind.STORAGE,
                        pricing.gb_months(row["byte_hours"] or 0, hours),
                        price.gb_month_fen,
                    ),
                )
                for kind, quantity, unit in quantities:
                    if quantity == 0:
                        continue
                    amount = pricing.line_amount(quantity, unit)
                    lines.append(
                        InvoiceLine(
                            app_id=row["app_id"],
                            app_name=row["app__name"],
                            region=region,
                            region_operator=getattr(region, "operator", "") or "",
                            price_list=price,
                            kind=kind,
                            quantity=pricing.shown(quantity),
                            unit_price_fen=unit,
                            amount_fen=amount,
                            operator_share_bp=price.operator_share_bp,
                            operator_share_fen=pricing.share_of(amount, price.operator_share_bp),
                            period_start=span.start,
                            period_end=span.end,
                        )
                    )
    return lines


def invoice_generate(*, tenant: Tenant, month: dt.date, now: dt.datetime) -> tuple[Invoice | None, bool]:
    """The tenant's invoice for ``month`` (created once; a second call returns the first).

    None when the tenant had no usage that month. Refused (``month-open``) before the
    month is over.
    """
    month = first_of_month(month)
    _, end = pricing.month_bounds(month)
    if now < end:
        raise refusal("month-open", f"{month:%Y-%m} is not over yet.")
    existing = Invoice.objects.filter(tenant=tenant, month=month).first()
    if existing is not None:
        return existing, False
    lines = _compute_lines(tenant, month)
    if not lines:
        return None, False
    total = sum(line.amount_fen for line in lines)
    share = sum(line.operator_share_fen for line in lines)
    try:
        with transaction.atomic():
            invoice = Invoice.objects.create(
                tenant=tenant,
                month=month,
                number=f"BSN-{month:%Y%m}-{tenant.slug}",
                total_fen=total,
                operator_share_fen=share,
                issued_at=now,
                due_at=now + dt.timedelta(days=settings.BSN_BILLING_DUE_DAYS),
                # Nothing to pay: paid on issue (no transfer).
                status=Invoice.Status.PAID if total == 0 else Invoice.Status.ISSUED,
                paid_at=now if total == 0 else None,
                log=[_log_line(now, f"issued: {len(lines)} lines, {total} fen")],
            )
            for line in lines:
                line.invoice = invoice
            InvoiceLine.objects.bulk_create(lines)
            audit_record(
                action="billing.invoice.issue",
                object_type="invoice",
                object_id=str(invoice.pk),
                tenant=tenant,
                data={"month": f"{month:%Y-%m}", "total_fen": total, "lines": len(lines)},
            )
    except IntegrityError:  # a concurrent close made it first: that one is the invoice
        return Invoice.objects.get(tenant=tenant, month=month), False
    return invoice, True


def month_close(*, month: dt.date, now: dt.datetime) -> dict:
    """Invoice every tenant with usage in ``month``; a tenant refused (no price) is reported, not fatal."""
    start, end = pricing.month_bounds(first_of_month(month))
    if now < end:
        raise refusal("month-open", f"{month:%Y-%m} is not over yet.")
    tenant_ids = (
        UsageHour.objects.filter(hour__gte=start, hour__lt=end).values_list("app__tenant_id", flat=True).distinct()
    )
    report = {"month": f"{month:%Y-%m}", "created": [], "existing": [], "refused": {}}
    for tenant in Tenant.objects.filter(pk__in=list(tenant_ids)).order_by("slug"):
        try:
            invoice, created = invoice_generate(tenant=tenant, month=month, now=now)
        except DomainError as exc:
            report["refused"][tenant.slug] = f"{exc.code}: {exc.detail}"
            logger.warning("billing: %s not invoiced for %s: %s", tenant.slug, report["month"], exc.detail)
            continue
        if invoice is not None:
            report["created" if created else "existing"].append(invoice.number)
    return report


def month_close_due(*, now: dt.datetime) -> dict | None:
    """Beat: close the previous month once ``BSN_BILLING_CLOSE_AFTER_HOURS`` of the new one passed."""
    month = previous_month(now)
    _, end = pricing.month_bounds(month)
    if now < end + dt.timedelta(hours=settings.BSN_BILLING_CLOSE_AFTER_HOURS):
        return None
    return month_close(month=month, now=now)


# --------------------------------------------------------------------------- payment


def revenue_wallet() -> Account | None:
    number = settings.BSN_BILLING_REVENUE_WALLET
    wallets = Account.objects.filter(kind=Account.Kind.WALLET, status=Account.Status.ACTIVE)
    if number:
        return wallets.filter(number=number).first()
    found = list(wallets.filter(wallet_kind=Account.WalletKind.CORPORATE, holder_tenant__kind=Tenant.Kind.PLATFORM)[:2])
    return found[0] if len(found) == 1 else None


def payer_wallet(tenant: Tenant) -> Account | None:
    """The tenant's paying wallet: the one set for it, else its only corporate wallet."""
    setting = BillingAccount.objects.select_related("wallet").filter(tenant=tenant).first()
    if setting is not None:
        return setting.wallet
    found = list(
        Account.objects.filter(
            kind=Account.Kind.WALLET, wallet_kind=Account.WalletKind.CORPORATE, holder_tenant=tenant
        ).exclude(status=Account.Status.CLOSED)[:2]
    )
    return found[0] if len(found) == 1 else None


def billing_account_set(*, tenant: Tenant, wallet_number: str, actor=None, request=None) -> BillingAccount:
    """Pay ``tenant``'s invoices from ``wallet_number``, a corporate wallet the tenant holds."""
    wallet = Account.objects.filter(
        kind=Account.Kind.WALLET, number=wallet_number, holder_tenant=tenant, wallet_kind=Account.WalletKind.CORPORATE
    ).first()
    if wallet is None:
        raise refusal("not-found", f"wallet {wallet_number} is not a corporate wallet of {tenant.slug}.", status=404)
    with transaction.atomic():
        account, _ = BillingAccount.objects.update_or_create(tenant=tenant, defaults={"wallet": wallet})
        audit_record(
            action="billing.wallet.set",
            object_type="tenant",
            object_id=str(tenant.pk),
            tenant=tenant,
            actor=actor,
            data={"wallet": wallet_number},
            request=request,
        )
    return account


def invoice_pay(*, invoice_id, now: dt.datetime, force: bool = False) -> Invoice:
    """Try to pay one invoice from the tenant's wallet into the platform's revenue wallet.

    Exactly once: the invoice row is locked for the whole attempt, the payment and the
    invoice's ``paid`` state commit together, and a second attempt (another worker, a
    retry, a replay) finds it paid and does nothing. A refusal (insufficient funds, frozen
    wallet, no wallet) writes no money and schedules the next attempt.
    ``force``: attempt even before the due date or the next scheduled attempt.
    """
    resumed = None
    with transaction.atomic():
        # Only the invoice row is locked (of=self): the tenant row stays free for anything else.
        invoice = Invoice.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=invoice_id)
        if invoice.status == Invoice.Status.PAID:
            return invoice
        if not force and (now < invoice.due_at or (invoice.next_attempt_at and now < invoice.next_attempt_at)):
            return invoice
        invoice.attempts += 1
        try:
            payer = payer_wallet(invoice.tenant)
            if payer is None:
                raise refusal("no-wallet", f"{invoice.tenant.slug} has no corporate DCEP wallet to pay from.")
            target = revenue_wallet()
            if target is None:
                raise refusal("no-revenue-wallet", "The platform's revenue wallet is not set up.")
            with transaction.atomic():  # a refusal rolls back nothing but this savepoint
                transfer = payment_create(
                    actor=Actor(tenant=invoice.tenant),
                    from_wallet=payer.number,
                    to_wallet=target.number,
                    amount=invoice.total_fen,
                    memo=f"{invoice.number} {invoice.payment_key}"[:140],
                )
        except DomainError as exc:
            retry = now + dt.timedelta(hours=settings.BSN_BILLING_RETRY_HOURS)
            invoice.last_error_code, invoice.last_error = exc.code, exc.detail
            invoice.next_attempt_at = retry
            invoice.log = [*invoice.log, _log_line(now, f"payment refused ({exc.code}): {exc.detail}")]
            invoice.save(
                update_fields=["attempts", "last_error_code", "last_error", "next_attempt_at", "log", "updated_at"]
            )
            audit_record(
                action="billing.invoice.payment_refused",
                object_type="invoice",
                object_id=str(invoice.pk),
                tenant=invoice.tenant,
                data={"code": exc.code, "attempt": invoice.attempts, "next_attempt_at": retry.isoformat()},
            )
            return invoice
        invoice.status, invoice.paid_at = Invoice.Status.PAID, now
        invoice.transfer_id, invoice.payer_wallet = transfer["id"], payer.number
        invoice.last_error_code, invoice.last_error, invoice.next_attempt_at = "", "", None
        invoice.log = [*invoice.log, _log_line(now, f"paid from {payer.number}: transfer {transfer['id']}")]
        invoice.save(
            update_fields=[
                "status",
                "paid_at",
                "transfer_id",
                "payer_wallet",
                "attempts",
                "last_error_code",
                "last_error",
                "next_attempt_at",
                "log",
                "updated_at",
            ]
        )
        audit_record(
            action="billing.invoice.paid",
            object_type="invoice",
            object_id=str(invoice.pk),
            tenant=invoice.tenant,
            data={"transfer": str(transfer["id"]), "amount_fen": invoice.total_fen, "wallet": payer.number},
        )
        resumed = invoice.tenant
        invoice.paid_now = True  # this call made the payment (payments_due reports it)
    if resumed is not None:
        suspension_lift_if_paid(tenant=resumed, now=now)
    return invoice


def payments_due(*, now: dt.datetime, limit: int = 500) -> dict:
    """Beat: attempt every unpaid invoice that is due and whose next attempt has come."""
    ids = list(
        Invoice.objects.filter(status=Invoice.Status.ISSUED, due_at__lte=now)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("due_at")
        .values_list("pk", flat=True)[:limit]
    )
    outcome = defaultdict(int)
    for invoice_id in ids:
        invoice = invoice_pay(invoice_id=invoice_id, now=now)
        if invoice.status == Invoice.Status.PAID:
            # "paid": by this pass; "already-paid": by another worker between the listing and the lock.
            outcome["paid" if getattr(invoice, "paid_now", False) else "already-paid"] += 1
        else:
            outcome[invoice.last_error_code or "waiting"] += 1
    return dict(outcome)


# --------------------------------------------------------------------------- suspension


def _overdue(now: dt.datetime):
    grace = dt.timedelta(days=settings.BSN_BILLING_GRACE_DAYS)
    return Invoice.objects.filter(status=Invoice.Status.ISSUED, due_at__lte=now - grace)


def _stop_apps(suspension: Suspension, now: dt.datetime) -> int:
    """Stop every app of the tenant meant to run (level-based: also one started during the suspension)."""
    stopped = 0
    apps = ChainApp.objects.filter(
        tenant=suspension.tenant, deleted_at__isnull=True, desired_state=ChainApp.DesiredState.RUNNING
    ).order_by("created_at")
    for app in apps:
        record, _ = SuspendedApp.objects.get_or_create(suspension=suspension, app=app)
        try:
            # The stop, the record of it (what resumption starts again) and the audit commit together.
            with transaction.atomic():
                operation = chainapp_stop(app=app, actor=None)
                SuspendedApp.objects.filter(pk=record.pk).update(
                    stop_operation=operation.pk, resumed_at=None, resume_operation=None, last_error="", updated_at=now
                )
                audit_record(
                    action="billing.app.suspend",
                    object_type="app",
                    object_id=str(app.pk),
                    tenant=suspension.tenant,
                    data={
                        "suspension": str(suspension.pk),
                        "invoice": suspension.invoice.number,
                        "reason": suspension.reason,
                    },
                )
        except _REFUSED as exc:  # e.g. an operation still running: the next pass tries again
            detail = str(getattr(exc, "detail", exc))
            SuspendedApp.objects.filter(pk=record.pk).update(last_error=detail[:500], updated_at=now)
            continue
        stopped += 1
    return stopped


def suspensions_enforce(*, now: dt.datetime) -> dict:
    """Beat: suspend tenants with an invoice unpaid past its grace period; keep their apps stopped;
    lift suspensions whose tenant has paid."""
    report = {"suspended": [], "stopped": 0, "lifted": []}
    overdue = _overdue(now).select_related("tenant").order_by("due_at")
    seen = set()
    for invoice in overdue:
        if invoice.tenant_id in seen:
            continue
        seen.add(invoice.tenant_id)
        suspension = Suspension.objects.filter(tenant=invoice.tenant, ended_at__isnull=True).first()
        if suspension is None:
            reason = (
                f"suspended for non-payment: invoice {invoice.number} ({invoice.total_fen} fen) was due "
                f"{invoice.due_at:%Y-%m-%d} ({invoice.last_error_code or 'unpaid'})"
            )
            try:
                with transaction.atomic():
                    suspension = Suspension.objects.create(
                        tenant=invoice.tenant, invoice=invoice, reason=reason, started_at=now
                    )
                    audit_record(
                        action="billing.tenant.suspend",
                        object_type="tenant",
                        object_id=str(invoice.tenant_id),
                        tenant=invoice.tenant,
                        data={"invoice": invoice.number, "reason": reason},
                    )
            except IntegrityError:  # another pass opened it at the same moment
                suspension = Suspension.objects.get(tenant=invoice.tenant, ended_at__isnull=True)
            else:
                report["suspended"].append(invoice.tenant.slug)
        report["stopped"] += _stop_apps(suspension, now)
    for suspension in Suspension.objects.filter(ended_at__isnull=True).exclude(tenant_id__in=seen):
        if suspension_lift_if_paid(tenant=suspension.tenant, now=now):
            report["lifted"].append(suspension.tenant.slug)
    return report


def suspension_lift_if_paid(*, tenant: Tenant, now: dt.datetime) -> bool:
    """End the tenant's suspension once no invoice is overdue, and start again the apps it stopped.

    Only apps the suspension stopped and that are still stopped (not started, deleted or
    otherwise changed by the tenant meanwhile) are started. An app whose start is refused
    for now (an operation still running) is retried at the next pass.
    """
    suspension = Suspension.objects.filter(tenant=tenant, ended_at__isnull=True).first()
    if suspension is None:
        return False
    if _overdue(now).filter(tenant=tenant).exists():
        return False
    pending = 0
    for record in suspension.apps.select_related("app").filter(stop_operation__isnull=False, resumed_at__isnull=True):
        app = record.app
        if app.deleted_at is not None or app.desired_state != ChainApp.DesiredState.STOPPED:
            SuspendedApp.objects.filter(pk=record.pk).update(resumed_at=now, last_error="changed by the tenant")
            continue
        try:
            with transaction.atomic():  # the start and its record commit together
                operation = chainapp_start(app=app, actor=None, resume_suspended=True)
                SuspendedApp.objects.filter(pk=record.pk).update(
                    resume_operation=operation.pk, resumed_at=now, last_error="", updated_at=now
                )
                audit_record(
                    action="billing.app.resume",
                    object_type="app",
                    object_id=str(app.pk),
                    tenant=tenant,
                    data={"suspension": str(suspension.pk)},
                )
        except _REFUSED as exc:
            detail = str(getattr(exc, "detail", exc))
            SuspendedApp.objects.filter(pk=record.pk).update(last_error=detail[:500], updated_at=now)
            pending += 1
            continue
    if pending:
        return False
    with transaction.atomic():
        if Suspension.objects.filter(pk=suspension.pk, ended_at__isnull=True).update(ended_at=now, updated_at=now):
            audit_record(
                action="billing.tenant.resume",
                object_type="tenant",
                object_id=str(tenant.pk),
                tenant=tenant,
                data={"suspension": str(suspension.pk)},
            )
    return True


def yuan(fen: int) -> str:
    """Fen as yuan for people: 123456 -> "1,234.56" (integer arithmetic, no float)."""
    return f"{fen // 100:,}.{fen % 100:02d}"

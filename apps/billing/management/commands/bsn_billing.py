"""bsn_billing price set|list, close, pay, suspend, invoice show|list, wallet — billing for the operator."""

from __future__ import annotations

import datetime as dt
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.billing import services
from apps.billing.models import Invoice, PriceList
from apps.billing.services import yuan
from apps.common.errors import DomainError
from apps.tenants.models import Tenant


def _month(text: str) -> dt.date:
    try:
        return dt.datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise CommandError(f"month must be YYYY-MM, not {text!r}") from None


def _when(text: str | None) -> dt.datetime:
    if not text:
        return timezone.now()
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _fen(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise CommandError(f"amounts are whole fen (digits only), not {text!r}")
    return int(text)


class Command(BaseCommand):
    help = "Billing: region prices, closing a month into invoices, payment attempts, suspensions, invoices."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="what", required=True)
        price = sub.add_parser("price", help="region price lists")
        psub = price.add_subparsers(dest="price_what", required=True)
        pset = psub.add_parser("set", help="a new price list for a region from a time (an hour, UTC)")
        pset.add_argument("region")
        pset.add_argument("--from", dest="valid_from", help="ISO 8601, start of an hour (default: the next hour)")
        pset.add_argument("--node-hour", required=True, help="fen per node-hour")
        pset.add_argument("--per-1000-tx", required=True, help="fen per 1,000 committed transactions")
        pset.add_argument("--gb-month", required=True, help="fen per GB-month of storage")
        pset.add_argument("--share-bp", required=True, help="region operator's revenue share, basis points")
        psub.add_parser("list", help="every price list")
        close = sub.add_parser("close", help="invoice every tenant's usage of a finished month (idempotent)")
        close.add_argument("month", help="YYYY-MM")
        close.add_argument("--now", help="ISO 8601 (default: now)")
        pay = sub.add_parser("pay", help="attempt due payments (or one invoice with --invoice, due or not)")
        pay.add_argument("--invoice", help="invoice number or id")
        pay.add_argument("--now", help="ISO 8601 (default: now)")
        suspend = sub.add_parser("suspend", help="suspend overdue tenants past the grace period, lift paid ones")
        suspend.add_argument("--now", help="ISO 8601 (default: now)")
        invoice = sub.add_parser("invoice", help="invoices")
        isub = invoice.add_subparsers(dest="invoice_what", required=True)
        show = isub.add_parser("show", help="one invoice with its lines")
        show.add_argument("tenant")
        show.add_argument("month", help="YYYY-MM")
        lst = isub.add_parser("list", help="invoices, newest month first")
        lst.add_argument("--tenant")
        wallet = sub.add_parser("wallet", help="the corporate DCEP wallet that pays a tenant's invoices")
        wallet.add_argument("tenant")
        wallet.add_argument("number", help="16-digit wallet number (a corporate wallet the tenant holds)")

    def handle(self, *args, what, **options):
        try:
            getattr(self, f"_{what}")(**options)
        except DomainError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from exc

    def _price(self, *, price_what, **o):
        if price_what == "list":
            for p in PriceList.objects.select_related("region").order_by("region__code", "valid_from"):
                self.stdout.write(
                    f"{p.region.code:16} from {p.valid_from:%Y-%m-%d %H:%M}  node-hour {p.node_hour_fen}  "
                    f"1k-tx {p.per_1000_tx_fen}  GB-month {p.gb_month_fen}  operator share {p.operator_share_bp} bp"
                )
            return
        now = timezone.now()
        valid_from = (
            _when(o["valid_from"])
            if o["valid_from"]
            else now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        )
        price = services.price_set(
            region_code=o["region"],
            valid_from=valid_from,
            node_hour_fen=_fen(o["node_hour"]),
            per_1000_tx_fen=_fen(o["per_1000_tx"]),
            gb_month_fen=_fen(o["gb_month"]),
            operator_share_bp=_fen(o["share_bp"]),
            now=now,
        )
        self.stdout.write(f"price list {price.pk}: {price.region.code} from {price.valid_from.isoformat()}")

    def _close(self, *, month, now, **o):
        report = services.month_close(month=_month(month), now=_when(now))
        self.stdout.write(f"{report['month']}: {len(report['created'])} issued, {len(report['existing'])} existing")
        for number in report["created"]:
            self.stdout.write(f"  issued {number}")
        for slug, why in report["refused"].items():
            self.stderr.write(f"  not invoiced {slug}: {why}")
        if report["refused"]:
            raise CommandError(f"{len(report['refused'])} tenant(s) not invoiced")

    def _pay(self, *, invoice, now, **o):
        when = _when(now)
        if invoice:
            found = Invoice.objects.filter(number=invoice).first()
            if found is None and _is_uuid(invoice):
                found = Invoice.objects.filter(pk=invoice).first()
            if found is None:
                raise CommandError(f"no invoice {invoice!r}")
            paid = services.invoice_pay(invoice_id=found.pk, now=when, force=True)
            self.stdout.write(f"{paid.number}: {paid.status} {paid.last_error_code} {paid.last_error}".rstrip())
            return
        self.stdout.write(f"{services.payments_due(now=when)}")

    def _suspend(self, *, now, **o):
        self.stdout.write(f"{services.suspensions_enforce(now=_when(now))}")

    def _invoice(self, *, invoice_what, **o):
        if invoice_what == "list":
            invoices = Invoice.objects.select_related("tenant").order_by("-month", "tenant__slug")
            if o.get("tenant"):
                invoices = invoices.filter(tenant__slug=o["tenant"])
            for inv in invoices:
                self.stdout.write(
                    f"{inv.number:32} {inv.month:%Y-%m} CNY {yuan(inv.total_fen):>14} {inv.status:7} "
                    f"due {inv.due_at:%Y-%m-%d} {inv.last_error_code}"
                )
            return
        inv = Invoice.objects.filter(tenant__slug=o["tenant"], month=_month(o["month"])).first()
        if inv is None:
            raise CommandError(f"no invoice of {o['tenant']} for {o['month']}")
        self.stdout.write(f"invoice {inv.number}  ({inv.status})  id {inv.pk}")
        self.stdout.write(f"  issued {inv.issued_at:%Y-%m-%d %H:%M}  due {inv.due_at:%Y-%m-%d %H:%M} UTC")
        for line in inv.lines.select_related("region").order_by("app_name", "region__code", "period_start", "id"):
            self.stdout.write(
                f"  {line.app_name:20} {line.region.code:14} {line.kind:12} {line.quantity:>22} x "
                f"{line.unit_price_fen:>8} = {line.amount_fen:>12} fen  (operator {line.operator_share_fen})"
            )
        total, share = inv.total_fen, inv.operator_share_fen
        self.stdout.write(f"  total {total} fen (CNY {yuan(total)}), region operators' share {share} fen")
        if inv.transfer_id:
            paid = f"{inv.paid_at:%Y-%m-%d %H:%M}"
            self.stdout.write(f"  paid {paid} by transfer {inv.transfer_id} from {inv.payer_wallet}")
        elif inv.last_error:
            self.stdout.write(f"  last attempt: {inv.last_error_code}: {inv.last_error}")

    def _wallet(self, *, tenant, number, **o):
        found = Tenant.objects.filter(slug=tenant).first()
        if found is None:
            raise CommandError(f"no tenant {tenant!r}")
        account = services.billing_account_set(tenant=found, wallet_number=number)
        self.stdout.write(f"{found.slug} pays from {account.wallet.number}")

"""What the printable invoice shows (pure: from an invoice with its lines to template context)."""

from __future__ import annotations

from collections import defaultdict

from apps.billing.models import Invoice, InvoiceLine
from apps.billing.services import yuan

UNITS = {
    InvoiceLine.Kind.NODE_HOURS: "node-hours",
    InvoiceLine.Kind.TRANSACTIONS: "× 1,000 transactions",
    InvoiceLine.Kind.STORAGE: "GB-months",
}


def invoice_context(invoice: Invoice) -> dict:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for line in invoice.lines.all():
        groups[(line.app_name, line.region.code)].append(
            {
                "kind": line.get_kind_display(),
                "unit": UNITS[line.kind],
                "quantity": line.quantity.normalize() if line.quantity else line.quantity,
                "unit_price": yuan(line.unit_price_fen),
                "amount": yuan(line.amount_fen),
                "period": f"{line.period_start:%Y-%m-%d %H:%M} – {line.period_end:%Y-%m-%d %H:%M} UTC",
            }
        )
    sections = [{"app": app, "region": region, "lines": lines} for (app, region), lines in sorted(groups.items())]
    return {
        "invoice": invoice,
        "tenant": invoice.tenant,
        "month": f"{invoice.month:%Y-%m}",
        "total": yuan(invoice.total_fen),
        "sections": sections,
    }

"""dcep_issue <operator> <amount> — the central bank issues <amount> fen to an operator bank (tier 1)."""

from __future__ import annotations

import uuid

from django.core.management.base import BaseCommand, CommandError

from apps.common.errors import DomainError
from apps.dcep.tier1 import issuance_create

MAX_AMOUNT = 2**63 - 1


def parse_amount(text: str) -> int:
    """A positive whole number of fen (digits only: no sign, decimal point or exponent)."""
    if not text.isascii() or not text.isdigit() or int(text) <= 0:
        raise CommandError(f"amount must be a positive whole number of fen, not {text!r}")
    value = int(text)
    if value > MAX_AMOUNT:
        raise CommandError(f"amount must be at most {MAX_AMOUNT} fen")
    return value


class Command(BaseCommand):
    help = "Issue money (integer fen) from the central bank to an operator bank: a tier-1 transaction, then its vault."

    def add_arguments(self, parser):
        parser.add_argument("operator", help="operator bank slug, e.g. bank-1")
        parser.add_argument("amount", help="fen (100 fen = 1 yuan)")

    def handle(self, *args, operator, amount, **options):
        value = parse_amount(amount)
        try:
            op = issuance_create(operator_slug=operator, amount=value, request_key=f"cli:{uuid.uuid4()}")
        except DomainError as exc:
            raise CommandError(exc.detail) from exc
        height = (op.receipt or {}).get("height")
        self.stdout.write(f"issued {value} fen to {operator}")
        self.stdout.write(f"  transfer {op.transfer_id}")
        self.stdout.write(f"  tx {op.tx_id}")
        self.stdout.write(f"  height {height}")

"""Pure pricing arithmetic: exact quantities, one half-up rounding per invoice line.

No database here, so the rules are tested as properties (tests/billing/test_pricing.py).

Rounding: a quantity is kept exact (``fractions.Fraction``: node-seconds / 3600,
transactions / 1000, byte-hours / (10^9 × hours of the month)); the line's amount is
``quantity × unit price`` rounded half-up to a whole fen exactly once; the operator's share
of a line is ``amount × basis points / 10000`` rounded half-up once. An invoice's total is
the sum of its (already whole) line amounts, so the lines always add up to the total.
Hand-written rather than ``decimal`` with a context: Fraction is exact for every input
(no precision to choose), and half-up of a non-negative Fraction is one integer division.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

SECONDS_PER_HOUR = 3600
TX_UNIT = 1000
GB = 10**9  # decimal gigabyte, as cloud storage is billed
QUANTITY_PLACES = Decimal("0.000000001")


def round_half_up(value: Fraction) -> int:
    """The nearest integer to a non-negative ``value``; exactly halfway rounds up."""
    if value < 0:
        raise ValueError("amounts are never negative")
    return (value.numerator * 2 + value.denominator) // (value.denominator * 2)


def line_amount(quantity: Fraction, unit_price_fen: int) -> int:
    return round_half_up(quantity * unit_price_fen)


def share_of(amount_fen: int, basis_points: int) -> int:
    return round_half_up(Fraction(amount_fen * basis_points, 10_000))


def node_hours(node_seconds: int) -> Fraction:
    return Fraction(node_seconds, SECONDS_PER_HOUR)


def thousand_tx(tx_committed: int) -> Fraction:
    return Fraction(tx_committed, TX_UNIT)


def gb_months(storage_byte_hours: int, hours_in_month: int) -> Fraction:
    """Storage averaged over every hour of the month (an hour without a reading counts 0 bytes)."""
    return Fraction(storage_byte_hours, GB * hours_in_month)


def shown(quantity: Fraction) -> Decimal:
    """The quantity as printed on the invoice (9 places); the amount is computed from the exact one."""
    return (Decimal(quantity.numerator) / Decimal(quantity.denominator)).quantize(QUANTITY_PLACES, ROUND_HALF_UP)


def month_bounds(month: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[first hour, first hour of the next month) in UTC."""
    start = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
    end = dt.datetime(month.year + (month.month == 12), month.month % 12 + 1, 1, tzinfo=dt.UTC)
    return start, end


def hours_in(month: dt.date) -> int:
    start, end = month_bounds(month)
    return int((end - start).total_seconds()) // SECONDS_PER_HOUR


@dataclass(frozen=True)
class Period:
    """A stretch of time billed at one price list."""

    start: dt.datetime
    end: dt.datetime
    price: object  # a PriceList (duck-typed: valid_from)


def periods(prices: list, start: dt.datetime, end: dt.datetime) -> tuple[list[Period], dt.datetime | None]:
    """Split [start, end) by ``prices`` (sorted by ``valid_from``): which price is in force when.

    Returns the periods and, if some hours of the range have no price in force yet, the
    end of that unpriced stretch (None when every hour is priced).
    """
    out: list[Period] = []
    unpriced_until = None
    for i, price in enumerate(prices):
        nxt = prices[i + 1].valid_from if i + 1 < len(prices) else None
        p_start = max(start, price.valid_from)
        p_end = min(end, nxt) if nxt is not None else end
        if p_start < p_end:
            out.append(Period(p_start, p_end, price))
    first = out[0].start if out else end
    if first > start:
        unpriced_until = first
    return out, unpriced_until

"""The pricing rules as properties (Hypothesis): exact quantities, one half-up rounding per line,
shares never above the amount, price periods that cover the month exactly once."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from apps.billing import pricing

fen = st.integers(min_value=0, max_value=10**12)
counts = st.integers(min_value=0, max_value=10**13)


@given(st.fractions(min_value=0, max_value=10**12))
def test_round_half_up_is_decimals_half_up(value: Fraction):
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    # Decimal division can round at its precision: only compare where it is exact enough.
    if abs(Fraction(exact) - value) < Fraction(1, 10**20):
        assert pricing.round_half_up(value) == int(exact.quantize(Decimal(1), ROUND_HALF_UP))
    assert abs(pricing.round_half_up(value) - value) <= Fraction(1, 2)


@given(counts, fen)
def test_a_line_is_within_half_a_fen_of_the_exact_price(node_seconds: int, unit: int):
    quantity = pricing.node_hours(node_seconds)
    amount = pricing.line_amount(quantity, unit)
    assert abs(amount - quantity * unit) <= Fraction(1, 2)
    assert amount >= 0 and isinstance(amount, int)


@given(fen, st.integers(min_value=0, max_value=10_000))
def test_the_operators_share_is_never_more_than_the_line(amount: int, bp: int):
    share = pricing.share_of(amount, bp)
    assert 0 <= share <= amount
    assert abs(share - Fraction(amount * bp, 10_000)) <= Fraction(1, 2)
    assert pricing.share_of(amount, 10_000) == amount and pricing.share_of(amount, 0) == 0


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from([672, 696, 720, 744]))
def test_constant_storage_for_a_whole_month_is_that_many_gb_months(gb_bytes: int, hours: int):
    assert pricing.gb_months(gb_bytes * hours, hours) == Fraction(gb_bytes, pricing.GB)


@dataclass(frozen=True)
class P:
    valid_from: dt.datetime


@given(
    st.sets(st.integers(min_value=-24 * 40, max_value=24 * 40), max_size=6),
    st.sampled_from([dt.date(2026, 2, 1), dt.date(2026, 10, 1), dt.date(2026, 12, 1)]),
)
def test_price_periods_cover_every_priced_hour_once(offsets: set[int], month: dt.date):
    start, end = pricing.month_bounds(month)
    prices = [P(start + dt.timedelta(hours=h)) for h in sorted(offsets)]
    spans, unpriced_until = pricing.periods(prices, start, end)
    covered = sum(int((s.end - s.start).total_seconds()) // 3600 for s in spans)
    first_priced = unpriced_until or start
    assert covered == int((end - first_priced).total_seconds()) // 3600
    for a, b in itertools.pairwise(spans):
        assert a.end == b.start  # contiguous, no overlap
    for span in spans:  # each stretch is billed at the latest price in force at its start
        in_force = [p for p in prices if p.valid_from <= span.start]
        assert span.price == in_force[-1]
    if not prices or min(p.valid_from for p in prices) >= end:
        assert spans == [] and unpriced_until == end


def test_month_bounds_and_hours():
    assert pricing.hours_in(dt.date(2026, 2, 1)) == 672
    assert pricing.hours_in(dt.date(2028, 2, 1)) == 696
    assert pricing.month_bounds(dt.date(2026, 12, 1))[1] == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)

"""The payment body's fast path accepts exactly what ``PaymentInput`` accepts, with the same values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ValidationError

from apps.dcep.api.serializers import MAX_FEN, PaymentInput, payment_input
from apps.dcep.tiers import luhn_digit

GOOD = "8" + "12345678901234"
GOOD += luhn_digit(GOOD)

wallets = st.one_of(
    st.just(GOOD),
    st.just(GOOD[:-1] + str((int(GOOD[-1]) + 1) % 10)),  # a bad check digit
    st.just(f" {GOOD}"),
    st.just(int(GOOD)),
    st.text(max_size=20),
    st.none(),
)
amounts = st.one_of(
    st.integers(min_value=-2, max_value=3),
    st.just(MAX_FEN),
    st.just(MAX_FEN + 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
memos = st.one_of(
    st.text(max_size=150),
    st.just(" padded "),
    st.just("nul\x00"),
    st.just("\ud800"),
    st.just("x" * 140),
    st.just("x" * 141),
    st.integers(),
    st.none(),
)
bodies = st.one_of(
    st.fixed_dictionaries(
        {"from_wallet": wallets, "to_wallet": wallets, "amount": amounts},
        optional={"memo": memos, "extra": st.integers()},
    ),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=5),
)


def _serializer(data):
    serializer = PaymentInput(data=data)
    if serializer.is_valid():
        return "ok", dict(serializer.validated_data)
    return "refused", serializer.errors


def _fast(data):
    try:
        return "ok", dict(payment_input(data))
    except ValidationError as exc:
        return "refused", exc.detail


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_fast_path_accepts_and_refuses_like_the_serializer(data):
    assert _fast(data) == _serializer(data)


@pytest.mark.parametrize("memo", ["", "rent", "房租 12 月", "x" * 140])
def test_an_ordinary_payment_takes_the_fast_path(memo, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the serializer was built")

    monkeypatch.setattr(PaymentInput, "__init__", fail)
    body = {"from_wallet": GOOD, "to_wallet": GOOD, "amount": 5, "memo": memo}
    assert payment_input(body) == body
    assert payment_input({"from_wallet": GOOD, "to_wallet": GOOD, "amount": 5}) == {**body, "memo": ""}

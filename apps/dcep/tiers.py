"""Wallet tiers and their caps (settings ``BSN_DCEP_TIERS``), and wallet numbers."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


@dataclass(frozen=True)
class Caps:
    balance: int | None
    single: int | None
    daily: int | None


_caps: dict[int, Caps] | None = None


def caps(tier: int) -> Caps:
    """The caps of ``tier``; read from settings once (a batch asks twice a payment, 16,380 times)."""
    global _caps
    if _caps is None:
        _caps = {t: Caps(*values) for t, values in settings.BSN_DCEP_TIERS.items()}
    return _caps[tier]


@receiver(setting_changed)
def _forget_caps(*, setting: str, **kwargs) -> None:  # override_settings in tests
    global _caps
    if setting == "BSN_DCEP_TIERS":
        _caps = None


TIERS = (1, 2, 3, 4)


def luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:  # every second digit from the right of the payload, doubled
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return len(number) == 16 and number.isdigit() and luhn_digit(number[:-1]) == number[-1]


def new_wallet_number() -> str:
    """16 digits: '8', 14 random digits, a Luhn check digit (a typo in one digit is caught)."""
    body = "8" + "".join(str(secrets.randbelow(10)) for _ in range(14))
    return body + luhn_digit(body)

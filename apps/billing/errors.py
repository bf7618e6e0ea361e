"""Billing refusals with stable codes (docs/billing.md, "Refusals")."""

from __future__ import annotations

from apps.common.errors import DomainError


class BillingError(DomainError):
    status_code = 409
    code = "billing-error"


def refusal(code: str, detail: str, status: int = 409) -> BillingError:
    return BillingError(detail, code=code, status=status)

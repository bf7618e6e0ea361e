"""DCEP refusals with stable codes (docs/dcep.md, "Refusals")."""

from __future__ import annotations

from apps.common.errors import DomainError


class DcepError(DomainError):
    status_code = 409
    code = "dcep-error"


def refusal(code: str, detail: str, status: int = 409, **extra) -> DcepError:
    return DcepError(detail, code=code, status=status, extra=extra or None)


class NotFound(DomainError):
    status_code = 404
    code = "not-found"


class Invalid(DomainError):
    """Invalid input found by a service (the field is named in ``errors``)."""

    status_code = 400
    code = "invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", extra={"errors": {field: [message]}})


class Tier1Unavailable(DomainError):
    status_code = 503
    code = "tier1-unavailable"

    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__(detail, retry_after=retry_after)

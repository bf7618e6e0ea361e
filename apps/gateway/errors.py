"""What the gateway answers when a ledger node cannot give the caller what it asked for.

All are problem details (apps.common.errors). Rejections keep the node's reason code
verbatim in ``code`` (``bad_signature``, ``replayed_nonce``… — docs/ledger-protocol.md),
so a tenant can look them up in the protocol page.
"""

from __future__ import annotations

from rest_framework import status
from rest_framework.exceptions import APIException


class GatewayError(APIException):
    """Base class of the gateway's node errors."""

    problem_code: str | None = None
    problem_extra: dict | None = None
    retry_after: int | None = None
    transient = True  # may succeed when sent again

    def __init__(self, detail: str, *, code: str | None = None, extra: dict | None = None) -> None:
        super().__init__(detail, code or self.default_code)
        if code:
            self.problem_code = code
        self.problem_extra = extra


class NoHealthyNode(GatewayError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "no-healthy-node"
    retry_after = 5


class OrderingUnavailable(GatewayError):
    """The node answered 503: its ordering service is not reachable right now."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "ordering-unavailable"
    retry_after = 2


class NodeTimeout(GatewayError):
    status_code = status.HTTP_504_GATEWAY_TIMEOUT
    default_code = "node-timeout"


class NodeRejected(GatewayError):
    """The node refused the transaction (HTTP 400 from the node): never in a block."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "rejected"
    transient = False

    def __init__(self, reason: str, detail: str, *, extra: dict | None = None) -> None:
        super().__init__(detail, code=reason, extra=extra)
        self.reason = reason


class NodeNotFound(GatewayError):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "not-found"
    transient = False


class NodeFailed(GatewayError):
    """The node answered something the protocol does not foresee (a 5xx, a non-JSON body)."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_code = "node-error"


class LedgerUnavailable(GatewayError):
    """A control-plane write (app user) could not be confirmed by the ledger yet."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "ledger-unavailable"
    retry_after = 2


class LedgerRefused(GatewayError):
    """The ledger refused a control-plane write for good; nothing was changed."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "ledger-refused"
    transient = False

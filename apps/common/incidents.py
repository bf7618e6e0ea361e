"""What tenants see of a failure: a clear reason and a reference; the detail is for staff.

Errors from the platform's insides — Docker engine URLs, container log tails, host
paths, etcd endpoints, node endpoints — help an operator and tell an attacker how the
platform is built. Every failure a tenant can see (operation logs and errors, a node's
last error, gateway problems, a 500) therefore carries a reason written for the tenant
and a reference id; the detail goes where only platform staff look: the process log
(one line with the reference) and, for operations, a ``detail`` member of the log entry
that the API shows to staff only (``apps.chainapps.api.serializers``) and the admin
shows as it is.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

logger = logging.getLogger("bsn.incidents")

DETAIL_LIMIT = 4000


@dataclass(frozen=True)
class Incident:
    ref: str
    reason: str  # for tenants
    detail: str  # for platform staff

    @property
    def message(self) -> str:
        return f"{self.reason} (ref {self.ref})"


def new_ref() -> str:
    return uuid.uuid4().hex[:12]


def incident(reason: str, detail: object, *, level: int = logging.WARNING) -> Incident:
    """Record ``detail`` for staff under a new reference; the tenant-facing part."""
    ref = new_ref()
    text = str(detail)[:DETAIL_LIMIT]
    logger.log(level, "[ref %s] %s: %s", ref, reason, text)
    return Incident(ref=ref, reason=reason, detail=text)


def sees_detail(request) -> bool:
    """Platform staff (Django staff accounts, the operators) see the internal detail."""
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and (user.is_staff or user.is_superuser))


def runtime_reason(exc: BaseException) -> str:
    """A tenant-facing reason for a driver or ordering error, from its class (never its text)."""
    from apps.runtime.base import (
        HostUnavailable,
        PermanentRuntimeError,
        PortInUse,
        RolledBack,
        RuntimeUnavailable,
        is_transient,
    )

    # Ordering errors subclass the runtime ones; named by their module to avoid an import cycle.
    name = type(exc).__name__
    if name == "OrderingNotReady":
        return "the ordering service is not ready yet"
    if name == "OrderingMisconfigured":
        return "the ordering service needs attention from the platform operator"
    if isinstance(exc, RuntimeUnavailable):
        return "the region's container engine does not answer"
    if isinstance(exc, HostUnavailable):
        return "the host that holds the node's data is drained or down; the node waits for it"
    if isinstance(exc, RolledBack):
        return "the new version did not become healthy, so the region rolled the node back to the previous one"
    if isinstance(exc, PortInUse):
        return "the node's port was taken on the host"
    if is_transient(exc):  # a driver's, etcd's or a node call's: the same flag
        return "a temporary error in the region"
    if isinstance(exc, PermanentRuntimeError):
        return "the region refused the node (the platform operator can look it up by the reference)"
    return "an internal error"

"""Custody refusals as domain errors (rendered as problem details by apps.common.errors)."""

from __future__ import annotations

from apps.common.errors import DomainError


class NotCustodied(DomainError):
    """The user registered its own public key: the platform holds nothing to sign or export with."""

    status_code = 409
    code = "user-not-in-custody"


class UserNotActive(DomainError):
    status_code = 409
    code = "user-not-active"


class AlreadyExported(DomainError):
    status_code = 409
    code = "key-already-exported"


class KeyDestroyed(DomainError):
    status_code = 409
    code = "key-destroyed"


class KeyUnreadable(DomainError):
    """A stored key or data key fails authentication: altered at rest. Staff get the detail."""

    status_code = 409
    code = "custody-key-unreadable"


class MasterKeyUnavailable(DomainError):
    """The master key that wraps the tenant's data key is not configured (platform staff fix it)."""

    status_code = 503
    code = "custody-master-key-missing"

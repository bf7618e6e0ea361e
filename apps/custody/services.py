"""Key custody: the platform generates, keeps (encrypted), uses and hands out app users' keys.

See docs/custody.md for the design. Who may call what is decided by the views
(``apps.gateway.api.views``): creating and signing need ``developer``, exporting ``admin``.
The private key exists in clear only inside these functions, for the moment it is used;
it is never logged, serialised or put in an audit event (only the public key and tx ids).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.chainapps.models import ChainApp
from apps.common.incidents import incident
from apps.custody import envelope
from apps.custody.errors import (
    AlreadyExported,
    KeyDestroyed,
    KeyUnreadable,
    MasterKeyUnavailable,
    NotCustodied,
    UserNotActive,
)
from apps.custody.models import CustodyKey, TenantDataKey
from apps.gateway.models import AppUser
from apps.gateway.services import appuser_register, appuser_reserve, gateway_submit
from bsn.client import sign_call
from bsn.ledger import crypto as ledger_crypto
from bsn.ledger.crypto import b64decode, b64encode, generate_private_key, public_key_of
from bsn.ledger.tx import tx_id_of


def master_ring() -> list[tuple[str, bytes]]:
    """The configured master keys, newest first. None configured (the embedded default): keys
    derived from SECRET_KEY and its fallbacks, so rotating the secret key the documented way
    (old one in SECRET_KEY_FALLBACKS, then ``bsn_custody rotate-master``) carries custody along."""
    ring = list(getattr(settings, "BSN_CUSTODY_MASTER_KEYS", None) or [])
    if ring:
        return ring
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())]
    return [envelope.derived_master_key(secret) for secret in secrets]


def _forget_parsed_keys() -> None:
    """The ledger's signing helper keeps parsed private keys in an LRU cache (for the
    client's and nodes' speed); a custodied key must not stay there after its one use.
    Clearing the whole cache costs the web process a re-parse (~50 µs) of the few keys it
    signs with otherwise (app admin keys)."""
    ledger_crypto._private.cache_clear()


# --------------------------------------------------------------------------- data keys


def datakey_get_or_create(*, tenant) -> TenantDataKey:
    """The tenant's data key row, made on first use (random, wrapped by the newest master key)."""
    found = TenantDataKey.objects.filter(tenant=tenant).first()
    if found is not None:
        return found
    key_id, wrapped = envelope.wrap(master_ring(), str(tenant.pk), envelope.new_data_key())
    try:
        with transaction.atomic():
            return TenantDataKey.objects.create(tenant=tenant, master_key_id=key_id, wrapped=wrapped)
    except IntegrityError:  # made concurrently: use that one (ours was never used)
        return TenantDataKey.objects.get(tenant=tenant)


def _open_data_key(data_key: TenantDataKey) -> bytes:
    try:
        return envelope.unwrap(master_ring(), str(data_key.tenant_id), data_key.master_key_id, data_key.wrapped)
    except envelope.MasterKeyMissing:
        seen = incident(
            "a custody master key is not configured",
            f"tenant {data_key.tenant_id}: data key wrapped by master key {data_key.master_key_id!r}, which is not "
            "in BSN_CUSTODY_MASTER_KEYS (put it back, or rewrap with `bsn_custody rotate-master` while it is there)",
        )
        raise MasterKeyUnavailable(
            "The platform cannot open this tenant's custodied keys right now: the master key that protects "
            f"them is not configured (ref {seen.ref}). Platform staff must restore it; nothing was signed.",
            extra={"ref": seen.ref},
        ) from None
    except envelope.Unreadable:
        seen = incident(
            "a custody data key fails authentication",
            f"tenant {data_key.tenant_id}, row {data_key.pk}: altered at rest, or a master key with this id but "
            "other bytes",
            level=logging.ERROR,
        )
        raise KeyUnreadable(
            f"This tenant's custody data key fails its integrity check (ref {seen.ref}); nothing was signed "
            "or exported. Platform staff have the details.",
            extra={"ref": seen.ref},
        ) from None


# --------------------------------------------------------------------------- private keys


def _custody_key(user: AppUser) -> CustodyKey:
    if user.mode != AppUser.Mode.CUSTODY:
        raise NotCustodied(
            f"User '{user.name}' registered its own public key (upload mode): the platform holds no private key "
            "for it. Sign locally and POST the envelope to /api/v1/apps/{id}/transactions, or create a custody "
            'user ({"name", "mode": "custody"}).'
        )
    key = CustodyKey.objects.select_related("data_key").filter(user=user).first()
    if key is None or key.ciphertext is None:
        raise KeyDestroyed(
            f"The private key of user '{user.name}' was destroyed when the user was revoked; nothing is left "
            "to sign with. Create a new custody user (rotation: new name, old revoked)."
        )
    return key


def _open_private_key(user: AppUser, key: CustodyKey) -> str:
    """The base64 seed; use it at once and drop it."""
    data_key = _open_data_key(key.data_key)
    try:
        seed = envelope.unseal(data_key, str(user.pk), user.public_key, key.ciphertext)
    except envelope.Unreadable:
        seen = incident(
            "a custodied private key fails authentication",
            f"app user {user.pk} ({user.name}): its ciphertext was altered or moved from another row",
            level=logging.ERROR,
        )
        raise KeyUnreadable(
            f"The stored private key of user '{user.name}' fails its integrity check (ref {seen.ref}); nothing "
            "was signed or exported. Platform staff have the details.",
            extra={"ref": seen.ref},
        ) from None
    private = b64encode(seed)
    matches = public_key_of(private) == user.public_key
    _forget_parsed_keys()
    if not matches:  # cannot happen unless the AAD check is bypassed
        raise KeyUnreadable(f"The stored private key of user '{user.name}' does not match its public key.")
    return private


def custody_key_destroy(*, user: AppUser) -> None:
    """Forget the user's private key (its ciphertext); the row stays as a record. Idempotent."""
    CustodyKey.objects.filter(user=user, ciphertext__isnull=False).update(
        ciphertext=None, destroyed_at=timezone.now(), updated_at=timezone.now()
    )


# --------------------------------------------------------------------------- services


def custody_user_create(*, app: ChainApp, actor, name: str, request=None) -> AppUser:
    """A custody-mode app user: a new Ed25519 key, its public part registered on the ledger
    exactly as an uploaded one (``appuser_register``), its private part sealed under the
    tenant's data key in the same transaction as the user row. The same request again
    finishes a registration left ``pending`` with the key stored for it."""
    data_key = datakey_get_or_create(tenant=app.tenant)
    private = generate_private_key()
    public = public_key_of(private)
    _forget_parsed_keys()
    with transaction.atomic():
        user, created = appuser_reserve(app=app, actor=actor, name=name, public_key=public, mode=AppUser.Mode.CUSTODY)
        if created:
            sealed = envelope.seal(_open_data_key(data_key), str(user.pk), public, b64decode(private, 32))
            CustodyKey.objects.create(user=user, data_key=data_key, ciphertext=sealed)
    del private
    return appuser_register(user=user, actor=actor, request=request)


def custody_submit(
    *,
    user: AppUser,
    actor,
    contract: str,
    function: str,
    args: dict[str, Any],
    nonce: str | None = None,
    request=None,
) -> dict:
    """Sign ``contract.function(args)`` as the custody user and submit it through the gateway
    (metered: the app's and tenant's TPS quotas apply); the receipt, or the gateway's problem.

    The signature is audited (``custody.sign``: who asked, which user, tx id) before the
    envelope leaves, so no signature the platform made is missing from the log, even if
    the request dies on the way. ``nonce``: the caller's, so that a retry after a 504 can
    never apply twice (the ledger refuses a used nonce: ``replayed_nonce``).
    """
    if user.mode == AppUser.Mode.CUSTODY and user.status != AppUser.Status.ACTIVE:
        raise UserNotActive(
            f"User '{user.name}' is {user.status}: only an active custody user's key signs."
            + (" Its key was destroyed on revocation." if user.status == AppUser.Status.REVOKED else "")
        )
    key = _custody_key(user)
    app = user.app
    try:
        signed = sign_call(str(app.pk), user.name, _open_private_key(user, key), contract, function, args, nonce=nonce)
    finally:
        _forget_parsed_keys()
    tx_id = tx_id_of(signed["tx"])
    audit_record(
        action="custody.sign",
        object_type="appuser",
        object_id=user.pk,
        tenant=app.tenant,
        actor=actor,
        data={
            "app": str(app.pk),
            "user": user.name,
            "public_key": user.public_key,
            "contract": contract,
            "function": function,
            "nonce": signed["tx"]["nonce"],
            "tx_id": tx_id,
        },
        request=request,
    )
    return gateway_submit(app=app, envelope=signed, metered=True)


@dataclass(frozen=True)
class ExportedKey:
    """What an export hands out, once. ``repr`` never shows the key."""

    user: AppUser
    private_key: str = field(repr=False)  # base64 of the 32-byte seed (bsn.client's format)
    private_key_pem: str = field(repr=False)  # PKCS#8, unencrypted
    exported_at: Any = None


def custody_export(*, user: AppUser, actor, request=None) -> ExportedKey:
    """Hand the custody user's private key out once; the user is marked exported (audited).

    The mark commits with the audit event before the key is returned: a second export is
    a 409 ``key-already-exported`` even if the first answer was lost (then rotate)."""
    with transaction.atomic():
        user = AppUser.objects.select_for_update().select_related("app__tenant").get(pk=user.pk)
        key = _custody_key(user)
        if user.exported_at is not None:
            raise AlreadyExported(
                f"The private key of user '{user.name}' was exported at {user.exported_at.isoformat()}; a key is "
                "exported once. If that copy is lost, rotate: create a new user and revoke this one."
            )
        if user.status != AppUser.Status.ACTIVE:
            raise UserNotActive(f"User '{user.name}' is {user.status}: only an active custody user's key is exported.")
        private = _open_private_key(user, key)
        now = timezone.now()
        AppUser.objects.filter(pk=user.pk).update(exported_at=now, updated_at=now)
        audit_record(
            action="custody.export",
            object_type="appuser",
            object_id=user.pk,
            tenant=user.app.tenant,
            actor=actor,
            data={"app": str(user.app_id), "user": user.name, "public_key": user.public_key},
            request=request,
        )
    pem = (
        Ed25519PrivateKey.from_private_bytes(b64decode(private, 32))
        .private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        .decode("ascii")
    )
    user.exported_at = now
    return ExportedKey(user=user, private_key=private, private_key_pem=pem, exported_at=now)


# --------------------------------------------------------------------------- master keys


@dataclass
class RotationReport:
    newest: str
    rewrapped: list[str] = field(default_factory=list)  # tenant slugs
    current: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (tenant slug, why)


def master_rotate() -> RotationReport:
    """Rewrap every tenant data key not under the newest master key onto it. The private
    keys are untouched (they are encrypted by the data keys, which do not change).

    One row at a time, each in its own transaction with an audit event; a data key whose
    master key is missing or which does not open is reported and left as it is."""
    ring = master_ring()
    newest = ring[0][0]
    report = RotationReport(newest=newest)
    report.current = TenantDataKey.objects.filter(master_key_id=newest).count()
    for pk in TenantDataKey.objects.exclude(master_key_id=newest).order_by("created_at").values_list("pk", flat=True):
        with transaction.atomic():
            row = TenantDataKey.objects.select_for_update().select_related("tenant").filter(pk=pk).first()
            if row is None or row.master_key_id == newest:  # gone, or rewrapped meanwhile
                continue
            try:
                plain = envelope.unwrap(ring, str(row.tenant_id), row.master_key_id, row.wrapped)
            except envelope.MasterKeyMissing:
                report.failed.append((row.tenant.slug, f"master key {row.master_key_id!r} is not configured"))
                continue
            except envelope.Unreadable:
                report.failed.append((row.tenant.slug, f"does not open with master key {row.master_key_id!r}"))
                continue
            old = row.master_key_id
            row.master_key_id, row.wrapped = envelope.wrap(ring, str(row.tenant_id), plain)
            row.rewrapped_at = timezone.now()
            row.save(update_fields=["master_key_id", "wrapped", "rewrapped_at", "updated_at"])
            audit_record(
                action="custody.rewrap",
                object_type="custody_data_key",
                object_id=row.pk,
                tenant=row.tenant,
                actor_label="bsn_custody rotate-master",
                data={"from": old, "to": newest},
            )
            report.rewrapped.append(row.tenant.slug)
    return report


def master_usage() -> list[tuple[str, int, bool]]:
    """``(master key id, data keys it wraps, configured?)`` for every id configured or in use."""
    configured = [key_id for key_id, _ in master_ring()]
    counts: dict[str, int] = dict.fromkeys(configured, 0)
    for key_id in TenantDataKey.objects.values_list("master_key_id", flat=True):
        counts[key_id] = counts.get(key_id, 0) + 1
    return [(key_id, n, key_id in configured) for key_id, n in counts.items()]

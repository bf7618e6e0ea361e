"""``Idempotency-Key`` for every DCEP POST that moves money or changes a wallet.

Keys are scoped per tenant and kept at least 24 h (``BSN_DCEP_IDEMPOTENCY_TTL_HOURS``).
The request is fingerprinted (method, path, canonical JSON of the body):

- a resend with the same key and body gets the first response, status and body byte for
  byte (header ``Idempotent-Replayed: true``);
- the same key with another body is a 422 ``idempotency-key-reused``;
- a concurrent duplicate waits for the first, then gets its response.

Two ways to run the work, both "exactly once":

``local`` (tier-2 money, all in this database): the key row is inserted in the same
transaction as the money movement and the stored response. A concurrent duplicate's
insert waits on the unique index until the first commits, then replays it. A crash
rolls back key, money and response together.

``remote`` (tier-1 money, which waits on the chain): the key is claimed ``in_flight`` in
its own transaction, the work runs, the response is stored. A duplicate that finds the
key in flight waits up to ``BSN_DCEP_IN_FLIGHT_WAIT_SECONDS`` and then gets a 409
``idempotency-key-in-flight``; an in-flight key older than
``BSN_DCEP_IN_FLIGHT_STALE_SECONDS`` belonged to a request that died, and its resend takes
it over (the work itself resumes from its own row, see ``apps.dcep.tier1``). A 503 (the
chain did not answer) is not stored: the resend runs again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.http import HttpResponse
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from apps.common.errors import PROBLEM_CONTENT_TYPE, DomainError
from apps.dcep.errors import DcepError
from apps.dcep.models import IdempotencyRecord

HEADER = "HTTP_IDEMPOTENCY_KEY"


def request_key(request) -> str:
    raw = request.META.get(HEADER)
    if raw is None:
        raise DcepError(
            "This request moves money or changes a wallet: send an Idempotency-Key header (1-255 characters).",
            code="idempotency-key-required",
            status=400,
        )
    if not 1 <= len(raw) <= 255 or not raw.isprintable():
        raise DcepError(
            "Idempotency-Key must be 1-255 printable characters.", code="idempotency-key-invalid", status=400
        )
    return raw


def fingerprint(request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    path = request.path.rstrip("/")  # /payments and /payments/ are one route, so one request
    return hashlib.sha256(f"{request.method} {path}\n{body}".encode()).hexdigest()


def _render(status: int, body: dict, content_type: str) -> HttpResponse:
    return HttpResponse(JSONRenderer().render(body), status=status, content_type=content_type)


def _replay(record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(
        bytes(record.response_body),
        status=record.response_status,
        content_type=record.response_headers.get("Content-Type", "application/json"),
    )
    for name, value in record.response_headers.items():
        if name != "Content-Type":
            response[name] = value
    response["Idempotent-Replayed"] = "true"
    return response


def _reused() -> DcepError:
    return DcepError(
        "This Idempotency-Key was used with another request body; use a new key for a new request.",
        code="idempotency-key-reused",
        status=422,
    )


def _outcome(request, work: Callable[[], tuple[int, dict, dict]]) -> tuple[int, dict, dict, str]:
    """Run ``work`` → (status, body, headers, content type); refusals become problem bodies."""
    try:
        status, body, headers = work()
        return status, body, headers, "application/json"
    except DomainError as exc:
        if exc.status_code == 503:
            raise
        return exc.status_code, exc.problem(instance=request.path), {}, PROBLEM_CONTENT_TYPE


def _prep(names: tuple[str, ...], values: tuple) -> list:
    """``values`` as the database takes them for the fields ``names`` (uuid, JSON, datetime, bytes)."""
    meta = IdempotencyRecord._meta
    return [meta.get_field(n).get_db_prep_save(v, connection) for n, v in zip(names, values, strict=True)]


_CLAIM_FIELDS = ("tenant", "key", "request_hash", "status", "response_headers", "created_at", "updated_at")
_CLAIM = (
    "INSERT INTO dcep_idempotencyrecord (tenant_id, key, request_hash, status, response_headers, created_at, "
    "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, key) DO NOTHING RETURNING id"
)
_STORE_FIELDS = ("status", "response_status", "response_body", "response_headers", "updated_at", "id")
_STORE = (
    "UPDATE dcep_idempotencyrecord SET status = %s, response_status = %s, response_body = %s, "
    "response_headers = %s, updated_at = %s WHERE id = %s"
)


def _claim_local(tenant, key: str, digest: str) -> tuple[IdempotencyRecord, bool]:
    """``get_or_create`` of the key in one statement where the database can (INSERT … ON CONFLICT
    DO NOTHING RETURNING): a concurrent insert of the same key makes it wait until that one
    commits (then the row is read and replayed) or rolls back (then this one inserts)."""
    features = connection.features
    if not (features.can_return_columns_from_insert and features.supports_update_conflicts_with_target):
        return IdempotencyRecord.objects.get_or_create(tenant=tenant, key=key, defaults={"request_hash": digest})
    for _ in range(3):  # the row seen by ON CONFLICT may be purged before it is read: insert again
        now = timezone.now()
        values = (tenant.pk, key, digest, IdempotencyRecord.Status.IN_FLIGHT, {}, now, now)
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM, _prep(_CLAIM_FIELDS, values))
            row = cursor.fetchone()
        if row is not None:
            return IdempotencyRecord(id=row[0], tenant=tenant, key=key, request_hash=digest), True
        record = IdempotencyRecord.objects.filter(tenant=tenant, key=key).first()
        if record is not None:
            return record, False
    raise IntegrityError(f"idempotency key {key!r} neither inserted nor found")  # pragma: no cover


def _store(record_id: int, status: int, body: dict, headers: dict, content_type: str) -> HttpResponse:
    response = _render(status, body, content_type)
    values = (
        IdempotencyRecord.Status.DONE,
        status,
        response.content,
        {"Content-Type": content_type, **headers},
        timezone.now(),
        record_id,
    )
    with connection.cursor() as cursor:
        cursor.execute(_STORE, _prep(_STORE_FIELDS, values))
    for name, value in headers.items():
        response[name] = value
    return response


def run_local(request, tenant, work: Callable[[], tuple[int, dict, dict]]) -> HttpResponse:
    """Key, money and response in one transaction (tier-2 writes)."""
    key, digest = request_key(request), fingerprint(request)
    with transaction.atomic():
        record, created = _claim_local(tenant, key, digest)
        if not created:
            if record.request_hash != digest:
                raise _reused()
            if record.status == IdempotencyRecord.Status.DONE:
                return _replay(record)
        sid = transaction.savepoint()  # a refusal undoes the work, not the key
        status, body, headers, content_type = _outcome(request, work)
        if status >= 400:
            transaction.savepoint_rollback(sid)
        else:
            transaction.savepoint_commit(sid)
        return _store(record.pk, status, body, headers, content_type)


def run_remote(request, tenant, work: Callable[[], tuple[int, dict, dict]]) -> HttpResponse:
    """Claim the key in flight, work outside a transaction, store the response (tier-1 writes)."""
    key, digest = request_key(request), fingerprint(request)
    deadline = time.monotonic() + settings.BSN_DCEP_IN_FLIGHT_WAIT_SECONDS
    while True:
        try:
            with transaction.atomic():
                record, created = IdempotencyRecord.objects.get_or_create(
                    tenant=tenant, key=key, defaults={"request_hash": digest}
                )
        except IntegrityError:  # pragma: no cover - get_or_create retries the read itself
            continue
        if not created:
            if record.request_hash != digest:
                raise _reused()
            if record.status == IdempotencyRecord.Status.DONE:
                return _replay(record)
            stale = timezone.now() - dt.timedelta(seconds=settings.BSN_DCEP_IN_FLIGHT_STALE_SECONDS)
            taken = IdempotencyRecord.objects.filter(
                pk=record.pk, status=IdempotencyRecord.Status.IN_FLIGHT, updated_at__lt=stale
            ).update(updated_at=timezone.now())
            if not taken:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise DcepError(
                    "The first request with this Idempotency-Key is still running; send it again in a moment.",
                    code="idempotency-key-in-flight",
                    status=409,
                )
        break
    try:
        status, body, headers, content_type = _outcome(request, work)
    except BaseException:
        # Not answered for good (503, a crash of this code): let a resend run again.
        IdempotencyRecord.objects.filter(pk=record.pk, status=IdempotencyRecord.Status.IN_FLIGHT).delete()
        raise
    return _store(record.pk, status, body, headers, content_type)


def idempotency_purge() -> int:
    cutoff = timezone.now() - dt.timedelta(hours=settings.BSN_DCEP_IDEMPOTENCY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted

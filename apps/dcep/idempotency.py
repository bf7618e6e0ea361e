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
            "This request moves money or changes a wallet: send an Idempotency-Key header "
            "(1-255 printable ASCII characters).",
            code="idempotency-key-required",
            status=400,
        )
    if not 1 <= len(raw) <= 255 or not (raw.isascii() and raw.isprintable()):
        raise DcepError(
            "Idempotency-Key must be 1-255 printable ASCII characters.", code="idempotency-key-invalid", status=400
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


_INSERT_FIELDS = (
    "tenant",
    "key",
    "request_hash",
    "status",
    "response_status",
    "response_body",
    "response_headers",
    "created_at",
    "updated_at",
)
_INSERT = (
    "INSERT INTO dcep_idempotencyrecord (tenant_id, key, request_hash, status, response_status, response_body, "
    "response_headers, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (tenant_id, key) DO NOTHING RETURNING id"
)
_STORE_FIELDS = ("status", "response_status", "response_body", "response_headers", "updated_at", "id")
_STORE = (
    "UPDATE dcep_idempotencyrecord SET status = %s, response_status = %s, response_body = %s, "
    "response_headers = %s, updated_at = %s WHERE id = %s"
)


def _store_response(status: int, body: dict, headers: dict, content_type: str) -> tuple[HttpResponse, dict]:
    response = _render(status, body, content_type)
    for name, value in headers.items():
        response[name] = value
    return response, {"Content-Type": content_type, **headers}


def _insert_done(tenant, key: str, digest: str, response: HttpResponse, headers: dict) -> bool:
    """Insert the key with its response; False when the key exists (this transaction must not commit).

    A concurrent insert of the same key makes this one wait on the unique index until the
    other commits (then: False) or rolls back (then: inserted)."""
    now = timezone.now()
    done = IdempotencyRecord.Status.DONE
    features = connection.features
    if features.can_return_columns_from_insert and features.supports_update_conflicts_with_target:
        values = (tenant.pk, key, digest, done, response.status_code, response.content, headers, now, now)
        with connection.cursor() as cursor:
            cursor.execute(_INSERT, _prep(_INSERT_FIELDS, values))
            return cursor.fetchone() is not None
    try:
        with transaction.atomic():
            IdempotencyRecord.objects.create(
                tenant=tenant,
                key=key,
                request_hash=digest,
                status=done,
                response_status=response.status_code,
                response_body=response.content,
                response_headers=headers,
            )
        return True
    except IntegrityError:
        return False


class _Taken(Exception):
    """The key was stored by another request while this one worked: roll back, answer from the record."""


def _answer_from_record(tenant, key: str, digest: str) -> HttpResponse:
    record = IdempotencyRecord.objects.filter(tenant=tenant, key=key).first()
    if record is None:  # purged in between (older than the TTL): the caller runs again
        raise _Taken
    if record.request_hash != digest:
        raise _reused()
    if record.status != IdempotencyRecord.Status.DONE:
        raise DcepError(
            "The first request with this Idempotency-Key is still running; send it again in a moment.",
            code="idempotency-key-in-flight",
            status=409,
        )
    return _replay(record)


def run_local(request, tenant, work: Callable[[], tuple[int, dict, dict]], *, look_first: bool = False) -> HttpResponse:
    """Key, money and response in one transaction (tier-2 writes), with as few statements as that takes.

    The work runs first and the key row is inserted with the response at the end (one
    ``INSERT … ON CONFLICT DO NOTHING``): no claim beforehand, no savepoints. If the key
    exists — a resend, or a concurrent duplicate that committed first (this insert waited
    for it on the unique index) — the work is rolled back and the stored response is the
    answer. A refusal rolls the work back and is then stored under the key in a
    transaction of its own, so a resend replays it. A 503 is never stored.

    ``look_first``: look the key up before working (one query more), for work that costs
    far more than a query (a batch), so that its resend is not computed again to be thrown away.
    """
    key, digest = request_key(request), fingerprint(request)
    if look_first and IdempotencyRecord.objects.filter(tenant=tenant, key=key).exists():
        try:
            return _answer_from_record(tenant, key, digest)
        except _Taken:
            pass
    for _ in range(3):  # a record purged between the conflict and the read: try again
        try:
            return _run_local_once(request, tenant, work, key, digest)
        except _Taken:
            continue
    raise IntegrityError(f"idempotency key {key!r} neither inserted nor found")  # pragma: no cover


def _run_local_once(request, tenant, work, key: str, digest: str) -> HttpResponse:
    taken = False
    try:
        with transaction.atomic():
            status, body, headers = work()
            response, stored_headers = _store_response(status, body, headers, "application/json")
            if _insert_done(tenant, key, digest, response, stored_headers):
                return response
            taken = True
            transaction.set_rollback(True)  # the key answers already: none of this work happened
    except DomainError as exc:  # a refusal: nothing of the work is written
        if exc.status_code == 503:
            raise
        refused = (exc.status_code, exc.problem(instance=request.path), {}, PROBLEM_CONTENT_TYPE)
    if taken:
        return _answer_from_record(tenant, key, digest)
    with transaction.atomic():
        response, stored_headers = _store_response(*refused)
        if _insert_done(tenant, key, digest, response, stored_headers):
            return response
    return _answer_from_record(tenant, key, digest)


def _store(record_id: int, status: int, body: dict, headers: dict, content_type: str) -> HttpResponse:
    response, stored_headers = _store_response(status, body, headers, content_type)
    values = (IdempotencyRecord.Status.DONE, status, response.content, stored_headers, timezone.now(), record_id)
    with connection.cursor() as cursor:
        cursor.execute(_STORE, _prep(_STORE_FIELDS, values))
    return response


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

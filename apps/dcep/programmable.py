"""Programmable payments: DCEP holds captured or voided by a chain app's events (issue 10).

A hold placed with ``release_on`` (``POST /api/v1/dcep/holds``) names a chain app the payer's
tenant can read and up to two rules, each an event name and a ``match`` (equality on
payload fields): the ``capture`` rule pays the whole hold to its payee, the ``void`` rule
gives it back to the payer. The event reader (``apps.events``) calls ``on_chain_events``
with each app's events in chain order, at least once; this module makes the effect exactly
once:

- each (hold, event) pair is recorded in ``HoldRelease`` under a unique constraint on
  ``(hold, ChainEvent.key)``, in the same transaction as the money it moves, and at most one
  record per hold captures or voids it (a partial unique index);
- the hold row is locked (``SELECT … FOR UPDATE``) before anything is decided, so two
  workers handed the same event take turns: the second finds the first's record and does
  nothing.

A hold hears only the events of blocks made after it was placed (block time, to the
millisecond). A hold already resolved (by hand, by expiry, by an earlier event) ignores the
event, and the record says so; a pending hold past its expiry is expired (released to the payer) by the
event, as the sweep would have done. docs/dcep.md, "Programmable payments".
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common.errors import DomainError
from apps.dcep import services as dcep_services
from apps.dcep.errors import Invalid
from apps.dcep.models import Hold, HoldRelease
from apps.events.feed import ChainEvent
from bsn.ledger.contracts.base import USER_RE

log = logging.getLogger(__name__)

# What a rule may say (checked by the API's input serializer, and again here for callers of the service).
MAX_MATCH_FIELDS = 16
MAX_NAME = 64
MAX_TEXT = 256


@dataclass(frozen=True)
class EventRule:
    """An event name, the payload fields it must carry (equal as JSON values) and, optionally,
    the app user who must have signed its transaction."""

    event: str
    match: dict[str, Any]
    signer: str = ""

    def matches(self, event: ChainEvent) -> bool:
        if event.name != self.event or not isinstance(event.payload, dict):
            return False
        if self.signer and event.signer != self.signer:
            return False
        return all(k in event.payload and _same(event.payload[k], v) for k, v in self.match.items())


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values of the same type: ``1`` is not ``true`` nor ``"1"`` (Python's ``==`` says 1 == True)."""
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class ReleaseRule:
    """``release_on`` of a hold: the app (already resolved through the API's tenancy scope) and its rules."""

    app: Any  # a ChainApp the caller's tenant reads (the view looked it up with TenantScopedViewSet.scope)
    contract: str = ""
    capture: EventRule | None = None
    void: EventRule | None = None

    def check(self) -> None:
        """Domain checks the input serializer cannot make (they need the app)."""
        if self.capture is None and self.void is None:
            raise Invalid("release_on", "a capture rule, a void rule or both")
        if self.contract and self.contract != self.app.contract_template:
            runs = self.app.contract_template
            raise Invalid("release_on.contract", f"the app runs the {runs!r} contract, not {self.contract!r}")
        for name, rule in (("capture", self.capture), ("void", self.void)):
            if rule is not None:
                check_rule(f"release_on.{name}", rule.event, rule.match)
                if rule.signer and not USER_RE.match(rule.signer):
                    raise Invalid(f"release_on.{name}.signer", f"an app user name matching {USER_RE.pattern}")
        if self.capture and self.void and self.capture == self.void:
            raise Invalid("release_on.void", "the same event and match as the capture rule")

    def hold_fields(self) -> dict[str, Any]:
        return {
            "release_app": self.app,
            # Bound to the app's own contract when none is named: its built-in ``_config`` contract
            # (or a later template) can never emit an event that releases the money.
            "release_contract": self.contract or self.app.contract_template,
            "capture_event": self.capture.event if self.capture else "",
            "capture_match": self.capture.match if self.capture else None,
            "capture_signer": self.capture.signer if self.capture else "",
            "void_event": self.void.event if self.void else "",
            "void_match": self.void.match if self.void else None,
            "void_signer": self.void.signer if self.void else "",
        }


def check_rule(field: str, event: str, match: Any) -> None:
    """An event name (1-64 characters) and a flat, non-empty object of scalars (text, integer, boolean, null)."""
    if not isinstance(event, str) or not event.strip() or len(event) > MAX_NAME:
        raise Invalid(f"{field}.event", f"an event name of 1-{MAX_NAME} characters")
    if not isinstance(match, dict) or not match:
        # An empty match would capture on every event of that name, of any letter of credit.
        raise Invalid(f"{field}.match", "a non-empty object of payload fields to compare")
    if len(match) > MAX_MATCH_FIELDS:
        raise Invalid(f"{field}.match", f"at most {MAX_MATCH_FIELDS} fields")
    for key, value in match.items():
        if not isinstance(key, str) or not key or len(key) > MAX_NAME:
            raise Invalid(f"{field}.match", f"field names of 1-{MAX_NAME} characters")
        # Floats are left out: equality of binary fractions is not something to release money on.
        if not (value is None or type(value) in (str, int, bool)):
            raise Invalid(f"{field}.match", f"{key}: a text, an integer, true, false or null (a flat object)")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise Invalid(f"{field}.match", f"{key}: at most {MAX_TEXT} characters")


def rule_of(hold: Hold) -> dict[str, Any] | None:
    """The hold's ``release_on`` as the API shows it (None for a plain hold)."""
    if hold.release_app_id is None:
        return None
    return {
        "app": str(hold.release_app_id),
        "contract": hold.release_contract or None,
        "capture": _rule_dict(hold.capture_event, hold.capture_match, hold.capture_signer),
        "void": _rule_dict(hold.void_event, hold.void_match, hold.void_signer),
    }


def _rule_dict(event: str, match: dict | None, signer: str) -> dict[str, Any] | None:
    return {"event": event, "match": match, "signer": signer or None} if event else None


def _rules(hold: Hold) -> list[tuple[str, EventRule]]:
    """The hold's rules, capture first: an event matching both captures."""
    rules = []
    if hold.capture_event:
        capture = EventRule(hold.capture_event, hold.capture_match or {}, hold.capture_signer)
        rules.append((HoldRelease.Outcome.CAPTURED, capture))
    if hold.void_event:
        rules.append((HoldRelease.Outcome.VOIDED, EventRule(hold.void_event, hold.void_match or {}, hold.void_signer)))
    return rules


def _block_time(event: ChainEvent) -> dt.datetime:
    return dt.datetime.fromtimestamp(event.block_time_ms / 1000, tz=dt.UTC)


def _listening(hold: Hold, event: ChainEvent) -> bool:
    """A hold hears the events of blocks made once it was placed (compared to the millisecond):
    a redelivered old event must not capture a hold placed after it, or the outcome would
    depend on when the reader happened to run."""
    return hold.created_at.replace(microsecond=hold.created_at.microsecond // 1000 * 1000) <= _block_time(event)


def _decision(hold: Hold, event: ChainEvent) -> str | None:
    if hold.release_contract and hold.release_contract != event.contract:
        return None
    if not _listening(hold, event):
        return None
    for outcome, rule in _rules(hold):
        if rule.matches(event):
            return outcome
    return None


# --------------------------------------------------------------------------- the consumer


def interested_apps() -> list[UUID]:
    """Ids of the apps with pending event-bound holds: the apps whose events the reader should pump."""
    pending = Hold.objects.filter(status=Hold.Status.PENDING, release_app__isnull=False)
    return sorted(set(pending.values_list("release_app_id", flat=True)), key=str)


def _candidates(app_id: UUID, event: ChainEvent) -> list[UUID]:
    """Ids of the holds of ``app_id`` (any status) that the event may match, oldest first.

    Only holds with the event's name are read (the partial index on the app); on PostgreSQL
    the database also compares the payload (``match <@ payload``), so the holds of other
    letters of credit are never loaded. ``_decision`` makes the exact comparison either way.
    """
    # Placed before the block's millisecond ended (``_listening`` has the exact rule).
    holds = Hold.objects.filter(release_app_id=app_id, created_at__lt=_block_time(event) + dt.timedelta(milliseconds=1))
    if connection.vendor == "postgresql" and isinstance(event.payload, dict):
        payload = event.payload
        on_name = Q(capture_event=event.name, capture_match__contained_by=payload) | Q(
            void_event=event.name, void_match__contained_by=payload
        )
    else:  # SQLite (the embedded default) has no JSON containment: names only, matched in Python
        on_name = Q(capture_event=event.name) | Q(void_event=event.name)
    return list(holds.filter(on_name).order_by("created_at", "id").values_list("pk", flat=True))


def on_chain_events(app_id: UUID, events: list[ChainEvent]) -> None:
    """Apply ``events`` (one app's, in chain order) to its event-bound holds, each exactly once.

    Safe to call again with the same events, and from two processes at once.
    """
    app_id = UUID(str(app_id))
    # One query for the event names any hold of the app listens to: the app's other events
    # (most of a busy chain's) cost no query each.
    names = set()
    for capture, void in (
        Hold.objects.filter(release_app_id=app_id).values_list("capture_event", "void_event").distinct()
    ):
        names.update((capture, void))
    names.discard("")
    for event in events:
        if str(event.app_id) != str(app_id):
            raise ValueError(f"event {event.key} is not of app {app_id}")
        if event.name not in names:
            continue
        for hold_id in _candidates(app_id, event):
            apply_event(hold_id, event)


def apply_event(hold_id: UUID, event: ChainEvent) -> str | None:
    """One event on one hold, in a transaction of its own; returns the outcome recorded now
    (None when nothing was recorded: no match, or this event was recorded before)."""
    try:
        with transaction.atomic():
            hold = Hold.objects.select_for_update(of=("self",)).select_related("from_account").get(pk=hold_id)
            outcome = _decision(hold, event)
            if outcome is None:
                return None
            if HoldRelease.objects.filter(hold=hold, event_key=event.key).exists():
                return None  # a redelivery, or another worker was first: done already
            outcome, detail = _apply(hold, event, outcome)
            HoldRelease.objects.create(
                hold=hold,
                event_key=event.key,
                event_name=event.name,
                tx_id=event.tx_id,
                height=event.height,
                outcome=outcome,
                detail=detail[:300],
            )
            audit_record(
                action=f"dcep.hold.event_{outcome}",
                object_type="hold",
                object_id=str(hold.pk),
                tenant=_payer_tenant(hold),
                actor_label="chain-event",
                data={
                    "app": str(event.app_id),
                    "event": event.name,
                    "event_key": event.key,
                    "tx_id": event.tx_id,
                    "height": event.height,
                    "amount": hold.amount,
                    "detail": detail,
                },
            )
    except IntegrityError:
        # The unique (hold, event_key) index caught a concurrent duplicate that the row lock
        # did not serialise (it cannot with the lock held, but the index is the last word):
        # this transaction rolled back whole, money included.
        log.info("event %s on hold %s was applied by another worker", event.key, hold_id)
        return None
    return outcome


def _apply(hold: Hold, event: ChainEvent, outcome: str) -> tuple[str, str]:
    """Move the money for ``outcome`` on the locked hold, or say why not."""
    now = timezone.now()
    if hold.status != Hold.Status.PENDING:
        return HoldRelease.Outcome.IGNORED, f"the hold was already {hold.status}"
    if hold.expires_at <= now:  # as ``holds_expire`` would have done had it run first
        dcep_services.resolve_locked(hold, Hold.Status.EXPIRED)
        return HoldRelease.Outcome.IGNORED, "the hold had expired; released to the payer"
    hold.released_by = {
        "key": event.key,
        "app": str(event.app_id),
        "name": event.name,
        "tx_id": event.tx_id,
        "height": event.height,
    }
    if outcome == HoldRelease.Outcome.VOIDED:
        dcep_services.resolve_locked(hold, Hold.Status.VOIDED)
        return outcome, ""
    try:
        with transaction.atomic():  # a refusal is raised before anything is written; the savepoint is for safety
            dcep_services.capture_locked(hold, hold.amount, now)
    except DomainError as exc:
        hold.released_by = None
        return HoldRelease.Outcome.REFUSED, f"{exc.code}: {exc.detail}"
    return outcome, ""


def _payer_tenant(hold: Hold):
    """The enterprise a corporate wallet was opened for, else the wallet's operator bank."""
    account = hold.from_account
    if account.holder_tenant_id is not None:
        return account.holder_tenant
    return account.operator.tenant if account.operator_id else None

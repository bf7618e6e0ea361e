"""Writing and verifying the audit chain."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditChainHead, AuditEvent


def _event_hash(fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _hashed_fields(event: AuditEvent) -> dict[str, Any]:
    return {
        "sequence": event.sequence,
        "prev_hash": event.prev_hash,
        "tenant": str(event.tenant_id) if event.tenant_id else None,
        "actor": event.actor_label,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "data": event.data,
        "source_ip": event.source_ip,
        "created_at": event.created_at.isoformat(),
    }


def client_ip(request) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit_record(
    *,
    action: str,
    object_type: str,
    object_id: str = "",
    tenant=None,
    actor=None,
    actor_label: str | None = None,
    data: dict | None = None,
    request=None,
) -> AuditEvent:
    """Append one event; runs inside the caller's transaction so it commits with the change."""
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
        event = AuditEvent(
            sequence=head.sequence + 1,
            tenant=tenant,
            actor=actor if getattr(actor, "pk", None) else None,
            actor_label=actor_label or (getattr(actor, "username", None) or "system"),
            action=action,
            object_type=object_type,
            object_id=str(object_id),
            data=data or {},
            source_ip=client_ip(request),
            created_at=timezone.now(),
            prev_hash=head.hash,
        )
        event.hash = _event_hash(_hashed_fields(event))
        event.save()
        AuditChainHead.objects.filter(pk=1).update(sequence=event.sequence, hash=event.hash)
    return event


def audit_verify() -> tuple[bool, int, str]:
    """Walk the whole chain; returns (ok, events checked, first problem)."""
    prev = "0" * 64
    count = 0
    for event in AuditEvent.objects.order_by("sequence").iterator():
        count += 1
        if event.prev_hash != prev:
            return False, count, f"event #{event.sequence}: previous hash does not match"
        if _event_hash(_hashed_fields(event)) != event.hash:
            return False, count, f"event #{event.sequence}: content does not match its hash"
        prev = event.hash
    return True, count, ""

"""Helpers for the DCEP API tests and the isolation matrix: wallets with money, and state snapshots."""

from __future__ import annotations

import json

from django.db.models import Q

from apps.dcep.models import Account, Entry, Hold, IdempotencyRecord, Institution, Settlement, Tier1Op, Transfer


def created(resp, status: int = 201) -> dict:
    """The JSON body of a call that must have succeeded with ``status``."""
    assert resp.status_code == status, resp.content
    return resp.json()


def open_wallet(client, *, tier: int = 2, kind: str = "personal", holder_tenant: str | None = None, name="holder"):
    body = {"holder_name": name, "tier": tier, "kind": kind}
    if holder_tenant:
        body["holder_tenant"] = holder_tenant
    return created(client.post("wallets", body))["id"]


def issue(cb, operator: str, amount: int) -> dict:
    return created(cb.post("issuances", {"operator": operator, "amount": amount}))


def funded_wallet(operator_client, amount: int, **wallet) -> str:
    """A wallet of ``operator_client``'s bank holding ``amount`` fen (from its vault)."""
    number = open_wallet(operator_client, **wallet)
    if amount:
        created(operator_client.post("exchanges", {"wallet": number, "amount": amount}))
    return number


def _default(value):
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


def rows(queryset) -> str:
    """Every row of ``queryset``, field by field, as a comparable string."""
    return json.dumps(list(queryset.order_by("pk").values()), default=_default, sort_keys=True)


def money_state() -> dict:
    """Everything a refused money call could have changed (idempotency records aside)."""
    return {
        "accounts": rows(Account.objects.all()),
        "transfers": Transfer.objects.count(),
        "entries": Entry.objects.count(),
        "holds": rows(Hold.objects.all()),
        "settlements": rows(Settlement.objects.all()),
        "tier1": rows(Tier1Op.objects.all()),
    }


def operator_snapshot(institution: Institution, tenants=()) -> dict:
    """Every DCEP row of one operator bank (and the idempotency keys of ``tenants``), field by field."""
    accounts = Account.objects.filter(operator=institution)
    return {
        "institutions": rows(Institution.objects.all()),
        "accounts": rows(accounts),
        "transfers": rows(
            Transfer.objects.filter(
                Q(from_operator=institution) | Q(to_operator=institution) | Q(from_account__in=accounts)
            ).distinct()
        ),
        "entries": rows(Entry.objects.filter(account__operator=institution)),
        "holds": rows(Hold.objects.filter(from_account__operator=institution)),
        "tier1": rows(Tier1Op.objects.filter(operator=institution)),
        "keys": rows(IdempotencyRecord.objects.filter(tenant__in=[institution.tenant, *tenants])),
        "settlements": rows(Settlement.objects.all()),
    }

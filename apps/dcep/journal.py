"""The double-entry journal engine: lock accounts, check rules in memory, write set-wise.

A ``Journal`` is used inside one database transaction:

1. ``lock(...)`` reads the accounts it will touch ``SELECT … FOR UPDATE`` in id order (a
   fixed order, so two payments never deadlock; only the accounts involved are locked —
   no global or per-operator lock);
2. the caller checks its rules against the in-memory ``Acc`` values and calls ``post``
   for each transfer, which moves the balances in memory and queues the rows;
3. ``flush()`` writes every queued transfer and entry and every changed balance with a
   handful of statements (COPY on PostgreSQL, bulk INSERT elsewhere; one
   ``UPDATE … FROM (VALUES …)`` for the balances), whatever the number of transfers.

Entries are chained per account: ``hash = sha256(prev_hash | transfer | account | seq |
amount | balance_after)`` (docs/dcep.md, "Journal"), the account row keeping the head.
The database refuses a negative balance (check constraint) and any UPDATE or DELETE of an
entry (trigger), so a bug here fails loudly instead of losing money.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass, field
from hashlib import sha256

from django.db import connection
from django.utils import timezone

from apps.dcep.models import Account, Entry, Transfer

_ACC_FIELDS = (
    "id",
    "kind",
    "operator_id",
    "holder_tenant_id",
    "number",
    "tier",
    "status",
    "balance",
    "held",
    "day_out_date",
    "day_out",
    "last_hash",
    "entry_count",
)

_TRANSFER_COLUMNS = (
    "id",
    "kind",
    "amount",
    "from_account_id",
    "to_account_id",
    "from_operator_id",
    "to_operator_id",
    "from_holder_id",
    "to_holder_id",
    "memo",
    "hold_id",
    "obligor_id",
    "obligee_id",
    "obligation",
    "settlement_id",
    "tier1_tx_id",
    "tier1_height",
    "created_at",
)
_VALUES_ROW = "(%s::bigint,%s::bigint,%s::bigint,%s::date,%s::bigint,%s,%s::bigint,%s)"
_UPDATE_FROM_VALUES = (
    "UPDATE dcep_account AS a SET balance = v.balance, held = v.held, day_out_date = v.d, "
    "day_out = v.o, last_hash = v.h, entry_count = v.c, status = v.s, updated_at = now() "
    "FROM (VALUES {rows}) AS v(id, balance, held, d, o, h, c, s) WHERE a.id = v.id"
)
_LOCK = (  # the columns of _ACC_FIELDS, in that order, and the operator's slug (for the API's answer)
    "SELECT a.id, a.kind, a.operator_id, a.holder_tenant_id, a.number, a.tier, a.status, a.balance, a.held, "
    "a.day_out_date, a.day_out, a.last_hash, a.entry_count, t.slug FROM dcep_account a "
    "LEFT JOIN dcep_institution i ON i.id = a.operator_id LEFT JOIN tenants_tenant t ON t.id = i.tenant_id "
    "WHERE {where} ORDER BY a.id FOR UPDATE OF a"
)
# At most this many transfers are written by one statement (two INSERTs and the UPDATE of the
# balances as data-modifying WITH queries: one round trip for a payment instead of five);
# more go by COPY, which is faster per row.
_ONE_STATEMENT_MAX = 4
_ENTRY_COLUMNS = ("transfer_id", "account_id", "amount", "balance_after", "seq", "prev_hash", "hash")


@dataclass
class Acc:
    """A locked account as the journal sees it during one transaction."""

    id: int
    kind: str
    operator_id: int | None
    holder_tenant_id: uuid.UUID | None
    number: str | None
    tier: int | None
    status: str
    balance: int
    held: int
    day_out_date: dt.date | None
    day_out: int
    last_hash: str
    entry_count: int
    operator_slug: str | None = None  # read with the lock; None for an account made in this transaction
    dirty: bool = field(default=False, compare=False)
    new: bool = field(default=False, compare=False)

    @property
    def total(self) -> int:
        """What the holder owns: spendable plus held (a wallet's API ``balance``)."""
        return self.balance + self.held

    def spent_today(self, today: dt.date) -> int:
        return self.day_out if self.day_out_date == today else 0

    def add_out_today(self, today: dt.date, amount: int) -> None:
        self.day_out = self.spent_today(today) + amount
        self.day_out_date = today
        self.dirty = True


def uuid4_strings(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as text, from one read of the OS's random source.

    ``str(uuid.uuid4())`` costs about 3 µs (a system call, an object, its formatting); a batch
    of 8,190 payments makes 8,190 of them. Same bits as uuid4: 122 random, version 4, RFC 4122.
    """
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])  # variant RFC 4122
    h = raw.hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-{h[i + 12:i + 16]}-{h[i + 16:i + 20]}-{h[i + 20:i + 32]}"
            for i in range(0, 32 * count, 32)]  # fmt: skip


def entry_hash(prev_hash: str, transfer_id: str, account_id: int, seq: int, amount: int, balance_after: int) -> str:
    line = f"{prev_hash}|{transfer_id}|{account_id}|{seq}|{amount}|{balance_after}"
    return sha256(line.encode()).hexdigest()


class Journal:
    def __init__(self) -> None:
        self.now = timezone.now()
        self.today = self.now.date()
        self.accounts: dict[int, Acc] = {}
        self.wallets: dict[str, Acc] = {}  # the locked accounts that have a number, by number
        self.transfers: list[tuple] = []
        self.entries: list[tuple] = []
        self._ids: list[str] = []  # transfer ids made ahead, taken from the end

    def _new_id(self) -> str:
        if not self._ids:  # 1 for the first transfer, then more and more (a batch makes thousands)
            self._ids = uuid4_strings(min(4096, max(1, 4 * len(self.transfers))))
        return self._ids.pop()

    # ------------------------------------------------------------------ reading
    def lock(self, *, ids=(), numbers=(), own=(), owner=(None, None), vault_of=(), issuance: bool = False) -> None:
        """Lock (FOR UPDATE, in id order) the accounts named by id, wallet number or operator vault.

        ``own``: wallet numbers locked only if ``owner`` = (operator id, holder tenant id) operates
        or holds them, so that naming another party's wallet never locks it (it is then absent:
        a 404 for the caller, and no wait for its owner).
        """
        operator_id, holder_tenant_id = owner
        if own and operator_id is None and holder_tenant_id is None:
            own = ()
        if connection.vendor == "postgresql":
            rows = self._lock_rows_postgresql(ids, numbers, own, owner, vault_of, issuance)
        else:
            from django.db.models import Q

            query = Q()
            if ids:
                query |= Q(id__in=list(ids))
            if numbers:
                query |= Q(number__in=list(numbers))
            if own:
                mine = Q(operator_id=operator_id) if operator_id is not None else Q(pk__in=[])
                if holder_tenant_id is not None:
                    mine |= Q(holder_tenant_id=holder_tenant_id)
                query |= Q(number__in=list(own)) & mine
            if vault_of:
                query |= Q(kind=Account.Kind.VAULT, operator_id__in=list(vault_of))
            if issuance:
                query |= Q(kind=Account.Kind.ISSUANCE)
            if not query:
                return
            rows = (
                Account.objects.select_for_update()
                .filter(query)
                .order_by("id")
                .values_list(*_ACC_FIELDS, "operator__tenant__slug")
            )
        for row in rows:
            acc = self.accounts[row[0]] = Acc(*row)
            if acc.number is not None:
                self.wallets[acc.number] = acc

    @staticmethod
    def _lock_rows_postgresql(ids, numbers, own, owner, vault_of, issuance: bool) -> list[tuple]:
        """The same query as the ORM's, written once (compiling it cost more than running it)."""
        clauses, params = [], []
        if ids:
            clauses.append("a.id = ANY(%s)")
            params.append(list(ids))
        if numbers:
            clauses.append("a.number = ANY(%s)")
            params.append(list(numbers))
        if own:  # a NULL owner part compares as unknown: it matches nothing
            clauses.append("(a.number = ANY(%s) AND (a.operator_id = %s OR a.holder_tenant_id = %s))")
            params += [list(own), owner[0], owner[1]]
        if vault_of:
            clauses.append("(a.kind = %s AND a.operator_id = ANY(%s))")
            params += [Account.Kind.VAULT.value, list(vault_of)]
        if issuance:
            clauses.append("a.kind = %s")
            params.append(Account.Kind.ISSUANCE.value)
        if not clauses:
            return []
        with connection.cursor() as cursor:
            cursor.execute(_LOCK.format(where=" OR ".join(clauses)), params)
            return cursor.fetchall()

    def by_number(self, number: str) -> Acc | None:
        return self.wallets.get(number)  # a dict, not a scan: a batch looks up 16,380 numbers

    def vault(self, operator_id: int) -> Acc | None:
        for acc in self.accounts.values():
            if acc.kind == Account.Kind.VAULT and acc.operator_id == operator_id:
                return acc
        return None

    def issuance(self) -> Acc | None:
        for acc in self.accounts.values():
            if acc.kind == Account.Kind.ISSUANCE:
                return acc
        return None

    def new_hold_account(self, operator_id: int, holder_tenant_id=None) -> Acc:
        """A fresh account for one hold (inserted by flush before the entries).

        It carries the payer's operator and holder tenant: the capture and release transfers
        start from it, and their ``from_operator``/``from_holder`` scope them to the payer's side.
        """
        row = Account.objects.create(kind=Account.Kind.HOLD, operator_id=operator_id, holder_tenant_id=holder_tenant_id)
        acc = Acc(*[getattr(row, f) for f in _ACC_FIELDS])
        self.accounts[acc.id] = acc
        return acc

    # ------------------------------------------------------------------ posting
    def post(
        self,
        *,
        kind: str,
        amount: int,
        source: Acc,
        target: Acc,
        legs: list[tuple[Acc, int]] | None = None,
        memo: str = "",
        hold_id=None,
        obligation: tuple[int, int, int] | None = None,
        tier1: tuple[str, int | None] | None = None,
    ) -> dict:
        """Queue one transfer; ``legs`` defaults to ``source -amount, target +amount``.

        Balances move in memory at once (later transfers of a batch see them). Returns the
        transfer as a dict (what the API shows).
        """
        if legs is None:
            legs = ((source, -amount), (target, amount))  # sums to zero by construction
        elif sum(value for _, value in legs) != 0:
            raise AssertionError("legs must sum to zero")
        tid = self._new_id()  # rows carry the text: psycopg dumps a str in C, a UUID in Python
        for acc, value in legs:
            acc.balance += value
            if acc.balance < 0 and acc.kind != Account.Kind.ISSUANCE:
                raise AssertionError(f"account {acc.id} would go below zero")  # rules are checked before post
            acc.entry_count += 1
            digest = entry_hash(acc.last_hash, tid, acc.id, acc.entry_count, value, acc.balance)
            self.entries.append((tid, acc.id, value, acc.balance, acc.entry_count, acc.last_hash, digest))
            acc.last_hash = digest
            acc.dirty = True
        obligor, obligee, owed = obligation or (None, None, 0)
        tx_id, height = tier1 or ("", None)
        self.transfers.append(
            (
                tid,
                kind,
                amount,
                source.id,
                target.id,
                source.operator_id,
                target.operator_id,
                source.holder_tenant_id,
                target.holder_tenant_id,
                memo,
                hold_id,
                obligor,
                obligee,
                owed,
                None,
                tx_id,
                height,
                self.now,
            )
        )
        return {
            "id": tid,
            "kind": kind,
            "amount": amount,
            "from": source,
            "to": target,
            "memo": memo,
            "hold": str(hold_id) if hold_id else None,
            "created_at": self.now,
            "tier1_tx_id": tx_id,
            "tier1_height": height,
        }

    # ------------------------------------------------------------------ writing
    def flush(self) -> None:
        if self.transfers and connection.vendor == "postgresql" and len(self.transfers) <= _ONE_STATEMENT_MAX:
            self._write_one_statement()
            self.transfers, self.entries = [], []
            return
        if self.transfers and connection.vendor == "postgresql":
            self._copy("dcep_transfer", _TRANSFER_COLUMNS, self.transfers)
            self._copy("dcep_entry", _ENTRY_COLUMNS, self.entries)
        elif self.transfers:
            Transfer.objects.bulk_create(
                [Transfer(**dict(zip(_TRANSFER_COLUMNS, row, strict=True))) for row in self.transfers]
            )
            Entry.objects.bulk_create([Entry(**dict(zip(_ENTRY_COLUMNS, row, strict=True))) for row in self.entries])
        self._update_accounts()
        self.transfers, self.entries = [], []

    @staticmethod
    def _copy(table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        with connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def _write_one_statement(self) -> None:
        """The transfers, their entries and the changed balances in one statement (PostgreSQL)."""
        dirty = [a for a in self.accounts.values() if a.dirty]
        transfer_rows = ",".join(["(" + ",".join(["%s"] * len(_TRANSFER_COLUMNS)) + ")"] * len(self.transfers))
        entry_rows = ",".join(["(" + ",".join(["%s"] * len(_ENTRY_COLUMNS)) + ")"] * len(self.entries))
        # Only column names and placeholders are formatted in; every value is a parameter.
        inserts = (
            f"WITH t AS (INSERT INTO dcep_transfer ({', '.join(_TRANSFER_COLUMNS)}) VALUES {transfer_rows}), "  # noqa: S608
            f"e AS (INSERT INTO dcep_entry ({', '.join(_ENTRY_COLUMNS)}) VALUES {entry_rows}) "
        )
        sql = inserts + _UPDATE_FROM_VALUES.format(rows=",".join([_VALUES_ROW] * len(dirty)))
        params = [item for row in self.transfers for item in row]
        params += [item for row in self.entries for item in row]
        params += [item for a in dirty for item in self._balance_row(a)]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
        for acc in dirty:
            acc.dirty = False

    @staticmethod
    def _balance_row(a: Acc) -> tuple:
        return (a.id, a.balance, a.held, a.day_out_date, a.day_out, a.last_hash, a.entry_count, a.status)

    def _update_accounts(self) -> None:
        dirty = [a for a in self.accounts.values() if a.dirty]
        if not dirty:
            return
        values = [self._balance_row(a) for a in dirty]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # 8 parameters a row; chunks stay far below PostgreSQL's 65,535-parameter limit.
                for start in range(0, len(values), 4000):
                    chunk = values[start : start + 4000]
                    rows = ",".join([_VALUES_ROW] * len(chunk))  # only placeholders; values are parameters
                    cursor.execute(_UPDATE_FROM_VALUES.format(rows=rows), [item for r in chunk for item in r])
            else:
                cursor.executemany(
                    "UPDATE dcep_account SET balance = %s, held = %s, day_out_date = %s, day_out = %s, "
                    "last_hash = %s, entry_count = %s, status = %s, updated_at = %s WHERE id = %s",
                    [(*row[1:], self.now, row[0]) for row in values],
                )
        for acc in dirty:
            acc.dirty = False

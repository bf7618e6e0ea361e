"""The ``dcep`` contract: tier 1 of a two-tier digital currency (platform only).

Each operator bank's allocation at the central bank, in integer fen. Only the configured
central bank signs: ``issue`` and ``withdraw`` move one operator's allocation, ``settle``
applies the net positions of a tier-2 batch (they sum to zero, so the supply does not
change). No allocation is ever negative and the whole supply stays readable.

Params ``{"central_bank": "<user>"}`` (required). State keys (a slug never contains ``:``
or starts with ``_``, so the four families cannot collide):

- ``op:<slug>``: the operator's allocation (int, kept at 0 once seen);
- ``batch:<batch_id>``: the settled batch's record;
- ``_totals``: ``{"issued": n, "withdrawn": n}``, cumulative;
- ``_operators``: sorted list of the operator slugs seen.

Invariant after every transaction: Σ allocations == issued − withdrawn, each ≥ 0; as
issued is kept ≤ MAX_INT, every allocation and total stays within a signed 64-bit int.
"""

from __future__ import annotations

import re
from typing import Any

from bsn.ledger.contracts.base import (
    MAX_INT,
    USER_RE,
    BadArguments,
    Contract,
    ContractFailure,
    amount,
    event,
    text,
)

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
ROOT_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_REF = 128
MAX_POSITIONS = 1000
TOTALS = "_totals"
OPERATORS = "_operators"


def op_key(slug: str) -> str:
    return f"op:{slug}"


def batch_key(batch_id: str) -> str:
    return f"batch:{batch_id}"


def _slug(value: Any, what: str) -> str:
    if type(value) is not str or not SLUG_RE.match(value):
        raise BadArguments(f"{what} must be an operator slug matching {SLUG_RE.pattern}")
    return value


class DcepContract(Contract):
    name = "dcep"
    platform_only = True
    functions = {
        "issue": ("operator", "amount", "ref"),
        "withdraw": ("operator", "amount", "ref"),
        "settle": ("batch_id", "positions", "merkle_root", "transfer_count"),
    }
    queries = {"allocation": ("operator",), "supply": (), "batch": ("batch_id",)}

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        params = dict(params or {})
        central_bank = params.pop("central_bank", None)
        if params:
            raise ValueError(f"dcep contract params: unknown {', '.join(sorted(params))} (only central_bank)")
        if type(central_bank) is not str or not USER_RE.match(central_bank):
            raise ValueError(f"dcep contract params: central_bank is required, a user name matching {USER_RE.pattern}")
        self.central_bank: str = central_bank

    # Stateless checks.

    def check_allocation(self, args: dict[str, Any], signer: str | None) -> None:
        _slug(args["operator"], "operator")

    def check_issue(self, args: dict[str, Any], signer: str | None) -> None:
        self.check_allocation(args, signer)
        amount(args)
        text(args, "ref", max_len=MAX_REF)

    check_withdraw = check_issue

    def check_batch(self, args: dict[str, Any], signer: str | None) -> None:
        text(args, "batch_id", max_len=128, pattern=BATCH_ID_RE)

    def check_settle(self, args: dict[str, Any], signer: str | None) -> None:
        self.check_batch(args, signer)
        positions = args["positions"]
        if type(positions) is not dict or len(positions) > MAX_POSITIONS:
            raise BadArguments(f"positions must be an object of at most {MAX_POSITIONS} operators")
        for slug, value in positions.items():
            _slug(slug, "positions keys")
            if type(value) is not int or abs(value) > MAX_INT:
                raise BadArguments(f"positions[{slug}] must be an integer (fen) between -{MAX_INT} and {MAX_INT}")
        net = sum(positions.values())
        if net != 0:
            raise BadArguments(f"positions must sum to zero, they sum to {net}")
        root = args["merkle_root"]
        if type(root) is not str or not ROOT_RE.match(root):
            raise BadArguments("merkle_root must be 64 lowercase hex characters (a SHA-256)")
        count = args["transfer_count"]
        if type(count) is not int or not 0 <= count <= MAX_INT:
            raise BadArguments("transfer_count must be a non-negative integer")

    # Execution.

    def _require_central_bank(self, ctx, function: str) -> None:
        if ctx.signer != self.central_bank:
            raise ContractFailure(f"only the central bank {self.central_bank} may {function}")

    @staticmethod
    def _totals(read) -> dict[str, int]:
        return read(TOTALS) or {"issued": 0, "withdrawn": 0}

    @staticmethod
    def _with_operators(ctx, slugs: list[str]) -> list[tuple[str, Any]]:
        """The ``_operators`` write if any of ``slugs`` is new, else nothing."""
        seen = ctx.get(OPERATORS) or []
        new = set(slugs) - set(seen)
        return [(OPERATORS, sorted({*seen, *new}))] if new else []

    def do_issue(self, ctx, args):
        self._require_central_bank(ctx, "issue")
        operator, value, ref = args["operator"], args["amount"], args["ref"]
        totals = self._totals(ctx.get)
        if totals["issued"] + value > MAX_INT:
            raise ContractFailure(f"total issued would exceed the maximum ({MAX_INT})")
        allocation = (ctx.get(op_key(operator)) or 0) + value
        totals = {**totals, "issued": totals["issued"] + value}
        writes = [(op_key(operator), allocation), (TOTALS, totals), *self._with_operators(ctx, [operator])]
        payload = {"operator": operator, "amount": value, "ref": ref}
        return {"operator": operator, "allocation": allocation}, writes, [event("issued", payload)]

    def do_withdraw(self, ctx, args):
        self._require_central_bank(ctx, "withdraw")
        operator, value, ref = args["operator"], args["amount"], args["ref"]
        have = ctx.get(op_key(operator)) or 0
        if have < value:
            raise ContractFailure(f"insufficient allocation: {operator} has {have}, withdrawing {value}")
        totals = self._totals(ctx.get)
        totals = {**totals, "withdrawn": totals["withdrawn"] + value}
        writes = [(op_key(operator), have - value), (TOTALS, totals)]
        payload = {"operator": operator, "amount": value, "ref": ref}
        return {"operator": operator, "allocation": have - value}, writes, [event("withdrawn", payload)]

    def do_settle(self, ctx, args):
        self._require_central_bank(ctx, "settle")
        batch_id, positions = args["batch_id"], args["positions"]
        if ctx.get(batch_key(batch_id)) is not None:
            raise ContractFailure(f"batch {batch_id!r} already settled")
        # Every new allocation first: one going below zero refuses the whole batch.
        allocations: dict[str, int] = {}
        for slug in sorted(positions):
            if positions[slug] == 0:
                continue
            have = ctx.get(op_key(slug)) or 0
            after = have + positions[slug]
            if after < 0:
                raise ContractFailure(
                    f"insufficient allocation: {slug} has {have}, batch {batch_id!r} debits {-positions[slug]}"
                )
            allocations[slug] = after
        record = {
            "batch_id": batch_id,
            "positions": dict(positions),
            "merkle_root": args["merkle_root"],
            "transfer_count": args["transfer_count"],
            "height": ctx.height,
            "tx_id": ctx.tx_id,
            "time": ctx.timestamp,
        }
        writes = [(op_key(slug), value) for slug, value in allocations.items()]
        writes += [(batch_key(batch_id), record), *self._with_operators(ctx, list(allocations))]
        payload = {"batch_id": batch_id, "merkle_root": args["merkle_root"], "transfer_count": args["transfer_count"]}
        return {"batch_id": batch_id, "allocations": allocations}, writes, [event("settled", payload)]

    # Queries.

    def q_allocation(self, read, args):
        return read(op_key(args["operator"])) or 0

    def q_supply(self, read, args):
        totals = self._totals(read)
        allocations = {slug: read(op_key(slug)) or 0 for slug in read(OPERATORS) or []}
        return {"issued": totals["issued"], "withdrawn": totals["withdrawn"], "allocations": allocations}

    def q_batch(self, read, args):
        return read(batch_key(args["batch_id"]))

"""The ``asset`` contract: non-crypto points with balances; the named issuer issues.

Params ``{"issuer": "<user>"}``; without an issuer every ``issue`` fails. State: holder
name -> balance (positive integer; a zero balance is removed).
"""

from __future__ import annotations

from typing import Any

from bsn.ledger.contracts.base import (
    MAX_INT,
    USER_RE,
    BadArguments,
    Contract,
    ContractFailure,
    amount,
    event,
    user,
)


class AssetContract(Contract):
    name = "asset"
    functions = {"issue": ("to", "amount"), "transfer": ("to", "amount")}
    queries = {"balance": ("holder",)}

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        params = dict(params or {})
        issuer = params.pop("issuer", None)
        if params:
            raise ValueError(f"asset contract params: unknown {', '.join(sorted(params))} (only issuer)")
        if issuer is not None and (type(issuer) is not str or not USER_RE.match(issuer)):
            raise ValueError("asset contract params: issuer must be a user name")
        self.issuer: str | None = issuer

    def check_issue(self, args: dict[str, Any], signer: str | None) -> None:
        user(args, "to")
        amount(args)

    def check_transfer(self, args: dict[str, Any], signer: str | None) -> None:
        self.check_issue(args, signer)
        if args["to"] == signer:
            raise BadArguments("cannot transfer to yourself")

    def check_balance(self, args: dict[str, Any], signer: str | None) -> None:
        user(args, "holder")

    def do_issue(self, ctx, args):
        if self.issuer is None:
            raise ContractFailure("no issuer is configured for this app (contract params issuer)")
        if ctx.signer != self.issuer:
            raise ContractFailure(f"only the issuer {self.issuer} may issue")
        to, value = args["to"], args["amount"]
        balance = (ctx.get(to) or 0) + value
        if balance > MAX_INT:
            raise ContractFailure("balance would exceed the maximum")
        return {"holder": to, "balance": balance}, [(to, balance)], [event("issued", {"to": to, "amount": value})]

    def do_transfer(self, ctx, args):
        sender, to, value = ctx.signer, args["to"], args["amount"]
        have = ctx.get(sender) or 0
        if have < value:
            raise ContractFailure(f"insufficient balance: {sender} has {have}, needs {value}")
        received = (ctx.get(to) or 0) + value
        if received > MAX_INT:
            raise ContractFailure("balance would exceed the maximum")
        left = have - value
        writes = [(sender, left or None), (to, received)]
        payload = {"from": sender, "to": to, "amount": value}
        return {"balance": left}, writes, [event("transferred", payload)]

    def q_balance(self, read, args):
        return read(args["holder"]) or 0

"""The ``kv`` contract: put, delete, get and history of JSON values by string key."""

from __future__ import annotations

from typing import Any

from bsn.ledger.contracts.base import BadArguments, Contract, ContractFailure, text


class KVContract(Contract):
    name = "kv"
    functions = {"put": ("key", "value"), "delete": ("key",)}
    queries = {"get": ("key",), "history": ("key",)}
    keeps_history = True

    def check_put(self, args: dict[str, Any], signer: str | None) -> None:
        text(args, "key")
        if args["value"] is None:
            raise BadArguments("value must not be null (use delete)")

    def check_delete(self, args: dict[str, Any], signer: str | None) -> None:
        text(args, "key")

    check_get = check_history = check_delete

    def do_put(self, ctx, args):
        return None, [(args["key"], args["value"])], []

    def do_delete(self, ctx, args):
        if ctx.get(args["key"]) is None:
            raise ContractFailure(f"key {args['key']!r} does not exist")
        return None, [(args["key"], None)], []

    def q_get(self, read, args):
        return read(args["key"])

    def q_history(self, read, args):
        raise NotImplementedError  # answered by the core from its history index

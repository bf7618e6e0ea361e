"""The ``notary`` contract: evidence that a document hash existed, who registered it, when."""

from __future__ import annotations

import re
from typing import Any

from bsn.ledger.contracts.base import BadArguments, Contract, ContractFailure, event

HASH_RE = re.compile(r"^[0-9a-f]{64}$")


class NotaryContract(Contract):
    name = "notary"
    functions = {"register": ("hash", "metadata")}
    queries = {"lookup": ("hash",)}

    def check_register(self, args: dict[str, Any], signer: str | None) -> None:
        self.check_lookup(args, signer)
        if not isinstance(args["metadata"], dict):
            raise BadArguments("metadata must be an object")

    def check_lookup(self, args: dict[str, Any], signer: str | None) -> None:
        if type(args["hash"]) is not str or not HASH_RE.match(args["hash"]):
            raise BadArguments("hash must be 64 lowercase hex characters (a SHA-256)")

    def do_register(self, ctx, args):
        digest = args["hash"]
        if ctx.get(digest) is not None:
            raise ContractFailure(f"hash {digest} is already registered")
        record = {
            "hash": digest,
            "owner": ctx.signer,
            "time": ctx.timestamp,
            "metadata": args["metadata"],
            "height": ctx.height,
            "tx_id": ctx.tx_id,
        }
        return record, [(digest, record)], [event("registered", {"hash": digest, "owner": ctx.signer})]

    def q_lookup(self, read, args):
        return read(args["hash"])

"""The built-in ``_config`` contract: the app's users and their public keys.

Only the signer ``_admin`` (the app admin key, held by the control plane) may call it.
State: user name -> base64 public key (null once revoked). A change takes effect from
the next block: every transaction of a block is checked against the users as they were
when the block started.
"""

from __future__ import annotations

from typing import Any

from bsn.ledger.contracts.base import BadArguments, Contract, ContractFailure, event, user

ADMIN = "_admin"


class ConfigContract(Contract):
    name = "_config"
    functions = {"user.add": ("name", "public_key"), "user.revoke": ("name",)}
    queries = {}

    def validate(self, function: str, args: dict[str, Any], signer: str) -> None:
        if signer != ADMIN:
            raise BadArguments(f"only {ADMIN} may call _config functions")
        super().validate(function, args, signer)

    def check_user_revoke(self, args: dict[str, Any], signer: str | None) -> None:
        if user(args, "name") == ADMIN:
            raise BadArguments(f"{ADMIN} is reserved")

    def check_user_add(self, args: dict[str, Any], signer: str | None) -> None:
        self.check_user_revoke(args, signer)
        from bsn.ledger.crypto import check_public_key

        try:
            check_public_key(args["public_key"])
        except (ValueError, TypeError) as exc:
            raise BadArguments(f"public_key must be base64 of a 32-byte Ed25519 key: {exc}") from None

    def do_user_add(self, ctx, args):
        name = args["name"]
        if ctx.get(name) is not None:
            raise ContractFailure(f"user {name} already exists (revoke it first to change its key)")
        return None, [(name, args["public_key"])], [event("user_added", {"name": name})]

    def do_user_revoke(self, ctx, args):
        name = args["name"]
        if ctx.get(name) is None:
            raise ContractFailure(f"user {name} does not exist")
        return None, [(name, None)], [event("user_revoked", {"name": name})]

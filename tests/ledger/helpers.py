"""Keys and signed transactions for the ledger tests (no Django, no server needed)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from bsn.ledger.chain import LedgerCore
from bsn.ledger.config import Config
from bsn.ledger.contracts import Context
from bsn.ledger.crypto import generate_private_key, public_key_of
from bsn.ledger.tx import make_tx, now_ms, sign_tx

APP = "app-1"
_nonces = itertools.count(1)


@dataclass
class Key:
    """A user (or node) key pair, base64 as on the wire."""

    name: str
    private: str = field(default_factory=generate_private_key)

    @property
    def public(self) -> str:
        return public_key_of(self.private)

    def tx(self, contract: str, function: str, args: dict[str, Any], *, app: str = APP, **kw: Any) -> dict[str, Any]:
        """A signed envelope; ``nonce``/``timestamp`` default to fresh values."""
        kw.setdefault("nonce", f"n{next(_nonces)}")
        return sign_tx(make_tx(app, contract, function, args, self.name, **kw), self.private)


# Fixed keys so subprocess nodes and in-process cores agree without passing files around.
ADMIN = Key("_admin", "Q4Ii0nIV3wrW6l/1ZgWM6ssSw6yEJOLkh/XsNsFwmSs=")
NODE_KEY = "d3NtUd1VbxwG7RQi1J8xrzHSlRWEkVAd6RwGSnPzF1w="


def add_user(user: Key, *, app: str = APP) -> dict[str, Any]:
    """The admin's signed ``_config`` ``user.add`` for ``user``."""
    return ADMIN.tx("_config", "user.add", {"name": user.name, "public_key": user.public}, app=app)


def revoke_user(name: str, *, app: str = APP) -> dict[str, Any]:
    return ADMIN.tx("_config", "user.revoke", {"name": name}, app=app)


def node_env(**extra: str) -> dict[str, str]:
    """BSN_* variables for a solo node of app APP with the fixed admin and node keys."""
    return {
        "BSN_APP_ID": APP,
        "BSN_ADMIN_PUBLIC_KEY": ADMIN.public,
        "BSN_NODE_PRIVATE_KEY": NODE_KEY,
        **extra,
    }


def core_config(data_dir: str, **overrides: Any) -> Config:
    """A Config for an in-process LedgerCore."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "node_id": "node-1",
        "app_id": APP,
        "admin_public_key": ADMIN.public,
        "node_private_key": NODE_KEY,
    }
    values.update(overrides)
    return Config(**values)


def open_core(path, **overrides) -> LedgerCore:
    core = LedgerCore(core_config(str(path), **overrides))
    core.open()
    return core


def commit(core: LedgerCore, envelopes: list[dict], timestamp: int | None = None) -> list[dict]:
    """Precheck, make a block, apply it: the solo path without the thread."""
    prepared = [core.precheck(json.loads(json.dumps(e))) for e in envelopes]
    block = core.make_block([p.envelope for p in prepared], timestamp or now_ms())
    return core.apply_committed(block)


class Harness:
    """Runs one contract over a dict state, applying writes like the core does."""

    def __init__(self, contract: Any) -> None:
        self.contract = contract
        self.state: dict[str, Any] = {}
        self.height = 0

    def run(self, signer: str, function: str, args: dict[str, Any]) -> tuple[Any, list[dict]]:
        self.contract.validate(function, args, signer)
        self.height += 1
        ctx = Context(signer, self.height, 1000 + self.height, f"tx{self.height}", self.state.get)
        result, writes, events = self.contract.execute(ctx, function, args)
        for key, value in writes:
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        return result, events

    def query(self, function: str, args: dict[str, Any]) -> Any:
        self.contract.validate_query(function, args)
        return self.contract.query(self.state.get, function, args)

"""Built-in contract templates, by the name used in ``BSN_CONTRACT``, plus ``_config``.

Contracts are deterministic: their state is built only by executing the chain's
transactions in order, so every node that applied the same blocks has the same state.
"""

from __future__ import annotations

from typing import Any

from bsn.ledger.contracts.asset import AssetContract
from bsn.ledger.contracts.base import BadArguments, Context, Contract, ContractFailure
from bsn.ledger.contracts.config import ADMIN, ConfigContract
from bsn.ledger.contracts.kv import KVContract
from bsn.ledger.contracts.notary import NotaryContract
from bsn.ledger.contracts.trade_finance import TradeFinanceContract

CONTRACTS: dict[str, type[Contract]] = {
    cls.name: cls for cls in (KVContract, NotaryContract, AssetContract, TradeFinanceContract)
}


def build(template: str, params: dict[str, Any] | None = None) -> dict[str, Contract]:
    """The app's contracts by name: its template (with params) and ``_config``.

    Raises ValueError for an unknown template or invalid params.
    """
    if template not in CONTRACTS:
        raise ValueError(f"unknown contract {template!r}; one of: {', '.join(sorted(CONTRACTS))}")
    return {template: CONTRACTS[template](params), ConfigContract.name: ConfigContract()}


__all__ = [
    "ADMIN",
    "CONTRACTS",
    "AssetContract",
    "BadArguments",
    "ConfigContract",
    "Context",
    "Contract",
    "ContractFailure",
    "KVContract",
    "NotaryContract",
    "TradeFinanceContract",
    "build",
]

"""Built-in contract templates, by the name used in ``BSN_CONTRACT``, plus ``_config``.

``CONTRACTS`` is the one registry of templates: the node's configuration, the control
plane's choices and the built-in framework all read it. Adding a template is one class
registered here.

Contracts are deterministic: their state is built only by executing the chain's
transactions in order, so every node that applied the same blocks has the same state.
"""

from __future__ import annotations

from typing import Any

from bsn.ledger.contracts.asset import AssetContract
from bsn.ledger.contracts.base import BadArguments, Context, Contract, ContractFailure
from bsn.ledger.contracts.config import ADMIN, ConfigContract
from bsn.ledger.contracts.dcep import DcepContract
from bsn.ledger.contracts.kv import KVContract
from bsn.ledger.contracts.notary import NotaryContract
from bsn.ledger.contracts.trade_finance import TradeFinanceContract

# In the order the control plane lists them.
CONTRACTS: dict[str, type[Contract]] = {
    cls.name: cls for cls in (KVContract, NotaryContract, AssetContract, TradeFinanceContract, DcepContract)
}


def build(template: str, params: dict[str, Any] | None = None) -> dict[str, Contract]:
    """The app's contracts by name: its template (with params) and ``_config``.

    Raises ValueError for an unknown template or invalid params.
    """
    if template not in CONTRACTS:
        raise ValueError(f"unknown contract {template!r}; one of: {', '.join(sorted(CONTRACTS))}")
    return {template: CONTRACTS[template](params), ConfigContract.name: ConfigContract()}


def validate_params(template: str, params: Any) -> None:
    """Raise ValueError (with a message fit for the API) unless a node would accept these.

    The same check the node makes at start-up (``build``), made before anything is deployed.
    """
    if params is not None and not isinstance(params, dict):
        raise ValueError("contract params must be an object")
    build(template, params)


__all__ = [
    "ADMIN",
    "CONTRACTS",
    "AssetContract",
    "BadArguments",
    "ConfigContract",
    "Context",
    "Contract",
    "ContractFailure",
    "DcepContract",
    "KVContract",
    "NotaryContract",
    "TradeFinanceContract",
    "build",
    "validate_params",
]

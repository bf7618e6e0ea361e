"""Node configuration, read once from the environment at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from bsn.ledger.contracts import CONTRACTS

# Ids end up in logs, labels and JSON; keep them to a boring, safe alphabet.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration value is missing or invalid (the node exits with status 2)."""


@dataclass(frozen=True)
class Config:
    """Everything the node reads from its environment."""

    host: str = "0.0.0.0"
    port: int = 8080
    data_dir: str = "/data"
    node_id: str = "local"
    app_id: str = "local"
    contract: str = "kv"
    access_log: bool = False


def _port(name: str, raw: str) -> int:
    try:
        port = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name} must be between 0 and 65535, got {port}")
    return port


def _ident(name: str, raw: str) -> str:
    if not _ID_RE.match(raw):
        raise ConfigError(
            f"{name} must be 1-128 characters of letters, digits and . _ : - "
            f"(starting with a letter or digit), got {raw!r}"
        )
    return raw


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def load(environ: Mapping[str, str] | None = None) -> Config:
    """Build a :class:`Config` from ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    defaults = Config()

    host = env.get("BSN_LEDGER_HOST", defaults.host).strip()
    if not host:
        raise ConfigError("BSN_LEDGER_HOST must not be empty")

    data_dir = env.get("BSN_LEDGER_DATA", defaults.data_dir).strip()
    if not data_dir:
        raise ConfigError("BSN_LEDGER_DATA must not be empty")

    contract = env.get("BSN_CONTRACT", defaults.contract).strip()
    if contract not in CONTRACTS:
        raise ConfigError(f"BSN_CONTRACT must be one of: {', '.join(sorted(CONTRACTS))}; got {contract!r}")

    return Config(
        host=host,
        port=_port("BSN_LEDGER_PORT", env.get("BSN_LEDGER_PORT", str(defaults.port))),
        data_dir=data_dir,
        node_id=_ident("BSN_NODE_ID", env.get("BSN_NODE_ID", defaults.node_id)),
        app_id=_ident("BSN_APP_ID", env.get("BSN_APP_ID", defaults.app_id)),
        contract=contract,
        access_log=_bool("BSN_LEDGER_ACCESS_LOG", env.get("BSN_LEDGER_ACCESS_LOG", "0")),
    )

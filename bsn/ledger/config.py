"""Node configuration, read once from the environment at start-up.

Names and meanings follow docs/ledger-protocol.md ("Node configuration"); the node-local
extras are ``BSN_LEDGER_ACCESS_LOG`` and ``BSN_TX_WAIT_MS``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bsn.ledger.contracts import CONTRACTS, build

# Ids end up in logs, labels and JSON; keep them to a boring, safe alphabet.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
ORDERING_MODES = ("solo", "etcd")


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
    contract_params: dict[str, Any] = field(default_factory=dict)
    # base64 seed; None: solo mode keeps a generated key in the data dir (node.key).
    node_private_key: str | None = field(default=None, repr=False)
    admin_public_key: str | None = None
    node_keys: dict[str, str] = field(default_factory=dict)  # {} in solo: only this node's key
    ordering: str = "solo"
    etcd_endpoints: tuple[str, ...] = ()
    etcd_user: str | None = None
    etcd_password: str | None = field(default=None, repr=False)
    # A token of etcd_user handed over with a warm node's claim (the control plane got it once
    # for the app's nodes); used until etcd refuses it, then the password.
    etcd_token: str | None = field(default=None, repr=False)
    etcd_prefix: str = ""  # default /bsn/apps/<app id>/
    etcd_block_window: int = 10000
    # A proposer that leaves pending batches this long without a block is deposed
    # (its lease may be kept alive by another app: docs/ordering.md, "Leases").
    etcd_takeover_s: int = 10
    # Before its first campaign for proposer, this node waits this long (the control plane
    # staggers an app's nodes by rank): nodes that start at once do not all campaign.
    etcd_campaign_delay_ms: int = 0
    peers: tuple[str, ...] = ()  # the app's other nodes (http://host:port): blocks older than the window
    # This node's API credential (docs/ledger-protocol.md "Node authentication"); None: a
    # development node keeps one in its data dir. Peers' credentials by peer URL.
    api_credential: str | None = field(default=None, repr=False)
    peer_credentials: dict[str, str] = field(default_factory=dict, repr=False)
    metrics_token: str | None = field(default=None, repr=False)  # opens GET /metrics only (Prometheus)
    block_max_txs: int = 500
    block_max_wait_ms: int = 20
    tx_max_age_s: int = 300
    tx_wait_ms: int = 10000  # how long POST /tx waits for its block before 504
    tx_max_bytes: int = 256 * 1024  # a signed envelope in canonical JSON
    batch_max_txs: int = 1000  # envelopes in one POST /tx/batch
    state_cache_bytes: int = 2 * 1024 * 1024  # parsed state values kept in memory


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _port(name: str, raw: str) -> int:
    return _int(name, raw, 0, 65535)


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


def _key(name: str, raw: str) -> str:
    """A base64 32-byte key (public key or private seed), strictly decoded."""
    value = raw.strip()
    try:
        ok = len(base64.b64decode(value.encode("ascii"), validate=True)) == 32
    except (binascii.Error, UnicodeEncodeError):
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be base64 (with padding) of 32 bytes")
    return value


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """``NAME`` or the contents of the file named by ``NAME_FILE``."""
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror or exc}") from None


def _urls(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of http(s)://host:port base URLs."""
    urls = tuple(u.strip().rstrip("/") for u in raw.split(",") if u.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name} entries must be http://host:port, got {url!r}")
    return urls


def _json_object(name: str, raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a JSON object") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object")
    return value


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

    node_id = _ident("BSN_NODE_ID", env.get("BSN_NODE_ID", defaults.node_id))
    app_id = _ident("BSN_APP_ID", env.get("BSN_APP_ID", defaults.app_id))

    contract = env.get("BSN_CONTRACT", defaults.contract).strip()
    if contract not in CONTRACTS:
        raise ConfigError(f"BSN_CONTRACT must be one of: {', '.join(sorted(CONTRACTS))}; got {contract!r}")
    params = _json_object("BSN_CONTRACT_PARAMS", env.get("BSN_CONTRACT_PARAMS") or "{}")
    try:
        build(contract, params)
    except ValueError as exc:
        raise ConfigError(f"BSN_CONTRACT_PARAMS: {exc}") from None

    ordering = env.get("BSN_ORDERING", defaults.ordering).strip() or defaults.ordering
    if ordering not in ORDERING_MODES:
        raise ConfigError(f"BSN_ORDERING must be one of: {', '.join(ORDERING_MODES)}; got {ordering!r}")

    private = _secret(env, "BSN_NODE_PRIVATE_KEY")
    private = _key("BSN_NODE_PRIVATE_KEY", private) if private else None
    admin = env.get("BSN_ADMIN_PUBLIC_KEY", "").strip()
    admin = _key("BSN_ADMIN_PUBLIC_KEY", admin) if admin else None

    node_keys: dict[str, str] = {}
    raw_keys = env.get("BSN_NODE_KEYS", "").strip()
    if raw_keys:
        for nid, pub in _json_object("BSN_NODE_KEYS", raw_keys).items():
            _ident("BSN_NODE_KEYS node id", nid)
            if not isinstance(pub, str):
                raise ConfigError(f"BSN_NODE_KEYS[{nid}] must be a base64 public key")
            node_keys[nid] = _key(f"BSN_NODE_KEYS[{nid}]", pub)

    endpoints = _urls("BSN_ETCD_ENDPOINTS", env.get("BSN_ETCD_ENDPOINTS", ""))
    peers = _urls("BSN_PEERS", env.get("BSN_PEERS", ""))
    prefix = env.get("BSN_ETCD_PREFIX", "").strip() or f"/bsn/apps/{app_id}/"
    if not prefix.endswith("/"):
        prefix += "/"

    credential = _secret(env, "BSN_NODE_API_CREDENTIAL")
    if credential is not None and len(credential) < 16:
        raise ConfigError("BSN_NODE_API_CREDENTIAL must be at least 16 characters")
    metrics_token = _secret(env, "BSN_METRICS_TOKEN")
    if metrics_token is not None and len(metrics_token) < 16:
        raise ConfigError("BSN_METRICS_TOKEN must be at least 16 characters")
    peer_credentials: dict[str, str] = {}
    raw_peer_credentials = _secret(env, "BSN_PEER_CREDENTIALS")
    if raw_peer_credentials:
        for url, value in _json_object("BSN_PEER_CREDENTIALS", raw_peer_credentials).items():
            if not isinstance(value, str) or not value:
                raise ConfigError("BSN_PEER_CREDENTIALS must map peer URLs to credentials")
            peer_credentials[url.rstrip("/")] = value

    if ordering == "etcd":
        if private is None:
            raise ConfigError("BSN_NODE_PRIVATE_KEY (or _FILE) is required with BSN_ORDERING=etcd")
        if not endpoints:
            raise ConfigError("BSN_ETCD_ENDPOINTS is required with BSN_ORDERING=etcd")
        if node_id not in node_keys:
            raise ConfigError(f"BSN_NODE_KEYS must name this node ({node_id}) with BSN_ORDERING=etcd")

    return Config(
        host=host,
        port=_port("BSN_LEDGER_PORT", env.get("BSN_LEDGER_PORT", str(defaults.port))),
        data_dir=data_dir,
        node_id=node_id,
        app_id=app_id,
        contract=contract,
        access_log=_bool("BSN_LEDGER_ACCESS_LOG", env.get("BSN_LEDGER_ACCESS_LOG", "0")),
        contract_params=params,
        node_private_key=private,
        admin_public_key=admin,
        node_keys=node_keys,
        ordering=ordering,
        etcd_endpoints=endpoints,
        etcd_user=env.get("BSN_ETCD_USER", "").strip() or None,
        etcd_password=_secret(env, "BSN_ETCD_PASSWORD"),
        etcd_token=_secret(env, "BSN_ETCD_TOKEN"),
        etcd_prefix=prefix,
        peers=peers,
        api_credential=credential,
        peer_credentials=peer_credentials,
        metrics_token=metrics_token,
        etcd_block_window=_int("BSN_ETCD_BLOCK_WINDOW", env.get("BSN_ETCD_BLOCK_WINDOW", "10000"), 1, 10**9),
        etcd_takeover_s=_int("BSN_ETCD_TAKEOVER_S", env.get("BSN_ETCD_TAKEOVER_S", "10"), 2, 3600),
        etcd_campaign_delay_ms=_int("BSN_ETCD_CAMPAIGN_DELAY_MS", env.get("BSN_ETCD_CAMPAIGN_DELAY_MS", "0"), 0, 60000),
        block_max_txs=_int("BSN_BLOCK_MAX_TXS", env.get("BSN_BLOCK_MAX_TXS", "500"), 1, 100000),
        block_max_wait_ms=_int("BSN_BLOCK_MAX_WAIT_MS", env.get("BSN_BLOCK_MAX_WAIT_MS", "20"), 0, 600000),
        tx_max_age_s=_int("BSN_TX_MAX_AGE_S", env.get("BSN_TX_MAX_AGE_S", "300"), 1, 10**7),
        tx_wait_ms=_int("BSN_TX_WAIT_MS", env.get("BSN_TX_WAIT_MS", "10000"), 1, 600000),
        # An envelope must fit one etcd pending batch (1 MiB) with room to spare.
        tx_max_bytes=_int("BSN_TX_MAX_BYTES", env.get("BSN_TX_MAX_BYTES", str(256 * 1024)), 1024, 768 * 1024),
        batch_max_txs=_int("BSN_BATCH_MAX_TXS", env.get("BSN_BATCH_MAX_TXS", "1000"), 1, 10000),
        state_cache_bytes=_int(
            "BSN_STATE_CACHE_BYTES", env.get("BSN_STATE_CACHE_BYTES", str(2 * 1024 * 1024)), 0, 1 << 30
        ),
    )

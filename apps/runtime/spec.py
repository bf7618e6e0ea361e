"""Pure description of what a runtime driver must run — no Docker, no Django.

``build_node_spec`` turns plain values into a ``NodeSpec``; drivers execute specs. The
builders are unit tested without an engine (tests/runtime/test_spec.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict, Unpack

LABEL_PREFIX = "io.bsn"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
LABEL_INSTALLATION = f"{LABEL_PREFIX}.installation"
LABEL_TENANT = f"{LABEL_PREFIX}.tenant"
LABEL_APP = f"{LABEL_PREFIX}.app"
LABEL_NODE = f"{LABEL_PREFIX}.node"
LABEL_GENERATION = f"{LABEL_PREFIX}.generation"
LABEL_ROLE = f"{LABEL_PREFIX}.role"
# A warm node (docs/provisioning.md, "Warm nodes"): made before any app, it carries this
# label instead of app and node labels (labels never change). The node claimed it keeps
# its name, and its spec names the warm node: the driver adopts the objects by this label.
LABEL_WARM = f"{LABEL_PREFIX}.warm"

# Uid/gid the ledger image owns /data with; never root.
NODE_USER = "10001:10001"
NODE_DATA_PATH = "/data"
# Secrets reach a node as files (never environment variables, which `docker inspect` and
# /proc/<pid>/environ show): one file per secret in this directory of the node's volume,
# readable by the node's user only; the node reads ``<NAME>_FILE``.
SECRETS_DIR = ".secrets"
# Where a warm node waits for its claim (bsn/ledger/__main__.py, BSN_CLAIM_FILE).
CLAIM_FILE = f"{NODE_DATA_PATH}/{SECRETS_DIR}/claim.json"


@dataclass(frozen=True)
class NodeSpec:
    """Everything needed to run one ledger node, whatever the driver."""

    name: str  # deterministic: container name, process dir name
    image: str
    command: tuple[str, ...] | None
    env: dict[str, str]  # no secrets here: they go in ``secrets``
    labels: dict[str, str]
    port: int  # port the node listens on inside the container
    publish_host: str  # host address the port is published on (region's host)
    network: str
    volume: str
    health_path: str = "/health"
    mem_limit_mb: int = 64
    cpus: float = 0.5
    pids_limit: int = 64
    user: str = NODE_USER
    read_only: bool = True
    tmpfs: dict[str, str] = field(default_factory=lambda: {"/tmp": "rw,noexec,nosuid,size=16m"})  # noqa: S108 - tmpfs inside the container
    app_labels: dict[str, str] = field(default_factory=dict)  # labels for the app's network
    # Host port to publish on. None lets the engine pick one at every start, so the
    # endpoint would change on each restart; the control plane allocates one per node.
    host_port: int | None = None
    # More ``(container port, host port)`` pairs published on ``publish_host`` (an ordering
    # member's peer port when the cluster spans engines; apps/ordering/spec.py).
    extra_ports: tuple[tuple[int, int], ...] = ()
    # ``{NAME: value}``: delivered as files; the node gets ``NAME_FILE`` (see secret_env).
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    # Its data exists only on its volume (a solo-ordered node's chain, an ordering member's
    # log): a runtime of several hosts keeps it on the host of that volume (Swarm:
    # ``node.id==``) instead of moving it to another host, where it would start empty.
    pinned: bool = False
    # The warm node this node was claimed from (its LABEL_WARM), "" if made for the node.
    warm: str = ""
    # That warm node's claim key (bsn/ledger/claim.py): the driver seals the node's claim
    # with it to hand it over on the node's own port. "" when there is none.
    claim_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class NodeStatus:
    """What a driver observed about one node."""

    name: str
    state: str  # running | stopped | missing | unknown
    runtime_id: str | None = None
    endpoint: str | None = None  # http://host:port reachable from the control plane
    labels: dict[str, str] = field(default_factory=dict)


def secret_file_name(name: str) -> str:
    """``BSN_NODE_PRIVATE_KEY`` → ``bsn_node_private_key``."""
    return name.lower()


def secret_files(spec: NodeSpec) -> dict[str, str]:
    """``{file name: value}`` for each secret of the spec, as the node finds them in its
    secrets directory (copied in by the driver, or handed over in a warm node's claim)."""
    return {secret_file_name(name): value for name, value in sorted(spec.secrets.items())}


def secret_env(spec: NodeSpec, directory: str) -> dict[str, str]:
    """``{NAME_FILE: path}`` for each secret of the spec, its file in ``directory``."""
    return {f"{name}_FILE": f"{directory.rstrip('/')}/{secret_file_name(name)}" for name in sorted(spec.secrets)}


def short_id(value: str, length: int = 12) -> str:
    return value.replace("-", "")[:length]


def node_name(*, installation_id: str, app_id: str, region_code: str) -> str:
    """Deterministic, engine-safe name: the same inputs always give the same object."""
    return f"bsn-{short_id(installation_id, 8)}-{short_id(app_id)}-{region_code}"


def network_name(name: str) -> str:
    """The network of the node (or warm node) of that name: one per app per region, each
    region its own engine in production."""
    return f"{name}-net"


def peer_network_name(*, installation_id: str, app_id: str) -> str:
    """One internal network per app per engine on which the app's nodes reach each other by name."""
    return f"bsn-{short_id(installation_id, 8)}-{short_id(app_id)}-peers"


def warm_node_name(*, installation_id: str, warm_id: str, region_code: str) -> str:
    """A warm node's name, in the shape of ``node_name`` with ``w<id>`` for the app: the
    node that claims it keeps it (and its network ``<name>-net``, volume ``<name>-data``)."""
    return f"bsn-{short_id(installation_id, 8)}-w{short_id(warm_id, 11)}-{region_code}"


def volume_name(name: str) -> str:
    return f"{name}-data"


def app_labels(*, installation_id: str, tenant_id: str, app_id: str) -> dict[str, str]:
    return {
        LABEL_MANAGED: "true",
        LABEL_INSTALLATION: installation_id,
        LABEL_TENANT: tenant_id,
        LABEL_APP: app_id,
    }


def _listen_env(port: int) -> dict[str, str]:
    """Where a node in a container listens and keeps its data."""
    return {"BSN_LEDGER_HOST": "0.0.0.0", "BSN_LEDGER_PORT": str(port), "BSN_LEDGER_DATA": NODE_DATA_PATH}


class Runtime(TypedDict):
    """What a container of a framework on a region runs with, the same for a node and a
    warm node (``apps.chainapps.provisioning.runtime_fields`` reads it off the framework
    and the region): declared once for both spec builders."""

    region_code: str
    image: str
    command: list[str] | None
    port: int
    health_path: str
    publish_host: str
    mem_limit_mb: int
    cpus: float
    pids_limit: int


def build_node_spec(
    *,
    installation_id: str,
    tenant_id: str,
    app_id: str,
    node_id: str,
    generation: int,
    env: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    host_port: int | None = None,
    pinned: bool = False,
    name: str = "",
    warm: str = "",
    claim_key: str = "",
    **runtime: Unpack[Runtime],
) -> NodeSpec:
    """``name``: the node's recorded name (a claimed warm node's); default the deterministic
    ``node_name``. Its network and volume are named after it. ``warm``: the warm node's id,
    ``claim_key`` its claim key."""
    name = name or node_name(installation_id=installation_id, app_id=app_id, region_code=runtime["region_code"])
    base_labels = app_labels(installation_id=installation_id, tenant_id=tenant_id, app_id=app_id)
    labels = {
        **base_labels,
        LABEL_NODE: node_id,
        LABEL_GENERATION: str(generation),
        LABEL_ROLE: "ledger",
        **({LABEL_WARM: warm} if warm else {}),
    }
    return _named_spec(
        name,
        runtime,
        env={"BSN_NODE_ID": node_id, "BSN_APP_ID": app_id, **(env or {})},
        labels=labels,
        app_labels=base_labels,
        host_port=host_port,
        pinned=pinned,
        secrets=dict(secrets or {}),
        warm=warm,
        claim_key=claim_key,
    )


def build_warm_spec(
    *, installation_id: str, warm_id: str, host_port: int | None, claim_key: str, **runtime: Unpack[Runtime]
) -> NodeSpec:
    """A warm node: the container, network and volume of a node of no app yet, started to
    wait for its claim (``CLAIM_FILE``, or sealed with ``claim_key`` on its port: its one
    secret). Same hardening and resources as the node that will claim it; no app or node
    label (``LABEL_WARM`` instead), generation 1 (a new node's)."""
    name = warm_node_name(installation_id=installation_id, warm_id=warm_id, region_code=runtime["region_code"])
    base = {LABEL_MANAGED: "true", LABEL_INSTALLATION: installation_id, LABEL_WARM: warm_id}
    return _named_spec(
        name,
        runtime,
        env={"BSN_CLAIM_FILE": CLAIM_FILE},
        labels={**base, LABEL_GENERATION: "1", LABEL_ROLE: "ledger"},
        app_labels=base,
        host_port=host_port,
        secrets={"BSN_CLAIM_KEY": claim_key},
        warm=warm_id,
        claim_key=claim_key,
    )


def _named_spec(name: str, runtime: Runtime, *, env: dict[str, str], **fields) -> NodeSpec:
    """The spec of the container ``name`` (a node's or a warm node's), one rule for both:
    its network and volume are named after it (a claimed node keeps the warm node's), it
    runs with ``runtime`` (whose region code is in its name already), and ``env`` comes
    after where it listens and keeps its data."""
    run = {key: value for key, value in runtime.items() if key not in ("region_code", "command")}
    command = runtime["command"]
    return NodeSpec(
        name=name,
        command=tuple(command) if command else None,
        network=network_name(name),
        volume=volume_name(name),
        env={**_listen_env(runtime["port"]), **env},
        **run,
        **fields,
    )

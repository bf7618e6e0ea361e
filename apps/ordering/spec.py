"""Pure builders for the ordering service's members (unit tested without Docker)."""

from __future__ import annotations

from apps.runtime.spec import (
    LABEL_GENERATION,
    LABEL_INSTALLATION,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_ROLE,
    NODE_DATA_PATH,
    NodeSpec,
    short_id,
    volume_name,
)

ROLE = "ordering"
CLIENT_PORT = 2379
PEER_PORT = 2380
DATA_DIR = f"{NODE_DATA_PATH}/etcd"  # etcd wants a 0700 directory it creates itself
MEMBER_MEMORY_MB = 256
MEMBER_CPUS = 0.5
MEMBER_PIDS = 256  # Go runtime threads
# Keep history bounded (docs/ledger-protocol.md): the last 1000 revisions, small raft
# snapshots, a block commit (<= 1024 ops, a few MiB) fits one request.
AUTO_COMPACTION_RETENTION = "1000"
MAX_TXN_OPS = 1024
MAX_REQUEST_BYTES = 8 * 1024 * 1024
QUOTA_BACKEND_BYTES = 2 * 1024 * 1024 * 1024
SNAPSHOT_COUNT = 10000
BCRYPT_COST = 4
# Bumped when the member command changes in a way a running member must pick up: the
# driver recreates containers of another generation (same name, same volume).
# 2: the peer port listens on the ordering network only (bsn.ledger.etcd_member).
GENERATION = "2"


def member_name(installation_id: str, index: int) -> str:
    return f"bsn-{short_id(installation_id, 8)}-etcd-{index}"


def ordering_network_name(installation_id: str) -> str:
    return f"bsn-{short_id(installation_id, 8)}-ordering"


def app_prefix(app_id: str) -> str:
    return f"/bsn/apps/{app_id}/"


def app_user(app_id: str) -> str:
    return f"app-{app_id.replace('-', '')}"


def service_labels(installation_id: str) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_INSTALLATION: installation_id, LABEL_ROLE: ROLE}


def client_url(name: str) -> str:
    """A member's client URL on a network it shares with the caller (Docker DNS)."""
    return f"http://{name}:{CLIENT_PORT}"


def peer_host(name: str, network: str) -> str:
    """The member's name on the ordering network only: Docker's DNS resolves
    ``<container>.<network>`` to the container's address on that network. A plain
    container name could resolve to the member's address on a shared app network."""
    return f"{name}.{network}"


def peer_url(name: str, network: str) -> str:
    return f"http://{peer_host(name, network)}:{PEER_PORT}"


def etcd_command(*, name: str, members: list[str], token: str, network: str, cluster_state: str = "new") -> list[str]:
    """``cluster_state="existing"``: the member joins a running cluster (after ``member add``).

    The client port listens everywhere (apps reach it on their networks); the peer port
    only on the member's ordering-network address, which etcd needs as an IP:
    ``bsn.ledger.etcd_member`` resolves it at start and adds ``--listen-peer-urls``.
    """
    cluster = ",".join(f"{m}={peer_url(m, network)}" for m in members)
    return [
        "python3",
        "-m",
        "bsn.ledger.etcd_member",
        f"--peer-host={peer_host(name, network)}",
        "--",
        "etcd",
        f"--name={name}",
        f"--data-dir={DATA_DIR}",
        f"--listen-client-urls=http://0.0.0.0:{CLIENT_PORT}",
        f"--advertise-client-urls={client_url(name)}",
        f"--initial-advertise-peer-urls={peer_url(name, network)}",
        f"--initial-cluster={cluster}",
        f"--initial-cluster-state={cluster_state}",  # ignored once the data dir holds a member
        f"--initial-cluster-token={token}",
        "--auto-compaction-mode=revision",
        f"--auto-compaction-retention={AUTO_COMPACTION_RETENTION}",
        f"--max-txn-ops={MAX_TXN_OPS}",
        f"--max-request-bytes={MAX_REQUEST_BYTES}",
        f"--quota-backend-bytes={QUOTA_BACKEND_BYTES}",
        f"--snapshot-count={SNAPSHOT_COUNT}",
        # Every etcd password is a random 24-byte token made by the control plane, so a high
        # bcrypt cost buys nothing; the default (10) made each app's credentials cost ~0.3 s.
        f"--bcrypt-cost={BCRYPT_COST}",
        "--logger=zap",
        "--log-level=warn",
    ]


def build_member_spec(
    *,
    installation_id: str,
    index: int,
    members: list[str],
    token: str,
    image: str,
    publish_host: str,
    cluster_state: str = "new",
    host_port: int | None = None,
) -> NodeSpec:
    name = members[index]
    network = ordering_network_name(installation_id)
    labels = {**service_labels(installation_id), LABEL_NODE: f"ordering-{index}", LABEL_GENERATION: GENERATION}
    command = etcd_command(name=name, members=members, token=token, network=network, cluster_state=cluster_state)
    return NodeSpec(
        name=name,
        image=image,
        command=tuple(command),
        env={"GOMAXPROCS": "2"},
        labels=labels,
        port=CLIENT_PORT,
        publish_host=publish_host,
        network=network,
        volume=volume_name(name),
        health_path="/health",
        mem_limit_mb=MEMBER_MEMORY_MB,
        cpus=MEMBER_CPUS,
        pids_limit=MEMBER_PIDS,
        app_labels=service_labels(installation_id),
        host_port=host_port,
    )

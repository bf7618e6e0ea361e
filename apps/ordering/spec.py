"""Pure builders for the ordering service's members (unit tested without Docker)."""

from __future__ import annotations

from apps.runtime.spec import (
    LABEL_GENERATION,
    LABEL_INSTALLATION,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_ROLE,
    NODE_DATA_PATH,
    SECRETS_DIR,
    NodeSpec,
    secret_file_name,
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


def published_peer_url(publish_host: str, host_port: int) -> str:
    """A member's peer URL when the cluster spans engines: its peer port published on its
    region's host address (containers of other engines cannot resolve its name), over
    TLS with client certificates (apps/ordering/peer_tls.py)."""
    host = f"[{publish_host}]" if ":" in publish_host else publish_host
    return f"https://{host}:{host_port}"


# Peer TLS material of a member spanning engines: secrets, so files in its volume.
PEER_CA, PEER_CERT, PEER_KEY = "BSN_ETCD_PEER_CA", "BSN_ETCD_PEER_CERT", "BSN_ETCD_PEER_KEY"


def _secret_path(name: str) -> str:
    return f"{NODE_DATA_PATH}/{SECRETS_DIR}/{secret_file_name(name)}"


def peer_tls_flags() -> list[str]:
    """etcd flags of peer TLS: listen on every address of the container (the engine maps
    the published peer port to whichever network carries its default route), admit only
    peers with a certificate of the cluster's CA."""
    return [
        f"--listen-peer-urls=https://0.0.0.0:{PEER_PORT}",
        f"--peer-cert-file={_secret_path(PEER_CERT)}",
        f"--peer-key-file={_secret_path(PEER_KEY)}",
        f"--peer-trusted-ca-file={_secret_path(PEER_CA)}",
        "--peer-client-cert-auth",
        "--experimental-peer-skip-client-san-verification",
    ]


def etcd_command(
    *,
    name: str,
    members: list[str],
    token: str,
    network: str,
    cluster_state: str = "new",
    peer_urls: dict[str, str] | None = None,
    peer_tls: bool = False,
) -> list[str]:
    """``cluster_state="existing"``: the member joins a running cluster (after ``member add``).

    The client port listens everywhere (apps reach it on their networks); the peer port
    only on the member's ordering-network address, which etcd needs as an IP:
    ``bsn.ledger.etcd_member`` resolves it at start and adds ``--listen-peer-urls``.
    ``peer_urls`` (``{member: URL}``): the URLs members advertise when the cluster spans
    engines (``published_peer_url``); by default each member's ordering-network URL.
    ``peer_tls``: the members span engines; etcd runs directly with ``peer_tls_flags``.
    """
    urls = peer_urls or {m: peer_url(m, network) for m in members}
    cluster = ",".join(f"{m}={urls[m]}" for m in members)
    if peer_tls:
        start, tail = ["etcd"], peer_tls_flags()
    else:
        start, tail = (
            ["python3", "-m", "bsn.ledger.etcd_member", f"--peer-host={peer_host(name, network)}", "--", "etcd"],
            [],
        )
    return [
        *start,
        f"--name={name}",
        f"--data-dir={DATA_DIR}",
        f"--listen-client-urls=http://0.0.0.0:{CLIENT_PORT}",
        f"--advertise-client-urls={client_url(name)}",
        f"--initial-advertise-peer-urls={urls[name]}",
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
        *tail,
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
    peer_urls: dict[str, str] | None = None,
    peer_host_port: int | None = None,
    peer_tls: dict[str, str] | None = None,
) -> NodeSpec:
    """``peer_urls``, ``peer_host_port`` and ``peer_tls`` (``{PEER_CA|PEER_CERT|PEER_KEY:
    PEM}``) when the cluster spans engines: the member publishes its peer port there,
    advertises ``peer_urls[name]`` and speaks TLS to its peers."""
    name = members[index]
    network = ordering_network_name(installation_id)
    labels = {**service_labels(installation_id), LABEL_NODE: f"ordering-{index}", LABEL_GENERATION: GENERATION}
    command = etcd_command(
        name=name,
        members=members,
        token=token,
        network=network,
        cluster_state=cluster_state,
        peer_urls=peer_urls,
        peer_tls=bool(peer_tls),
    )
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
        extra_ports=((PEER_PORT, peer_host_port),) if peer_host_port else (),
        secrets=dict(peer_tls or {}),
        pinned=True,  # its log is on its volume; a member started empty elsewhere must be re-added
    )

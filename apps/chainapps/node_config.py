"""The configuration a ledger node runs with (docs/ledger-protocol.md, "Node configuration").

``node_config(node)`` is called when a node spec is built, right before the driver runs
it (in the region's worker): that is the only moment the node's private key, its API
credential, its peers' credentials and the app's etcd password are decrypted, and they go
straight into the spec's ``secrets``, which the drivers deliver as files readable by the
node's user only — never into an environment variable, a log, an operation line or an
API response. ``build_node_spec`` adds the per-node basics (BSN_NODE_ID, BSN_APP_ID,
host, port, data).
"""

from __future__ import annotations

import json

from django.conf import settings

from apps.chainapps.keys import key_private
from apps.chainapps.models import ChainApp, LedgerNode
from apps.chainapps.node_auth import node_credential
from apps.runtime.base import PermanentRuntimeError
from apps.runtime.drivers import same_engine

# Between the first campaigns for proposer of an app's nodes, by rank: more than nodes that
# start together lie apart, so the first node's campaign is over when the second looks.
CAMPAIGN_STAGGER_MS = 200


def node_keys(app: ChainApp) -> dict[str, str]:
    """``{node id: public key}`` of every node of the app: whose block signatures to accept."""
    rows = LedgerNode.objects.filter(app=app).exclude(public_key="").values_list("pk", "public_key")
    return {str(pk): key for pk, key in rows}


def beside_on_engine(node: LedgerNode, other: LedgerNode) -> bool:
    """Do the two nodes run on one Docker engine, where they reach each other by container
    name over the app's internal peer network (``provisioning.node_join_peer_network``)?"""
    return node.region.driver == "docker" and same_engine(other.region, node.region)


def node_peers(node: LedgerNode) -> dict[str, LedgerNode]:
    """``{base URL: node}`` of the app's other nodes as seen from inside this node's container.

    On the same Docker engine by container name (the app's nodes there share an internal
    network, see ``provisioning.node_join_peer_network``); elsewhere by the published
    endpoint. Each peer on its own framework's port (nodes of one app differ during a
    rolling upgrade).
    A node fetches blocks older than the etcd window from these (``GET /blocks/{h}``),
    signing each request with that peer's credential.
    """
    peers: dict[str, LedgerNode] = {}
    for other in node.siblings:
        if beside_on_engine(node, other):
            peers[f"http://{other.name}:{other.current_framework.port}"] = other
        elif other.endpoint:
            peers[other.endpoint] = other
    return peers


def _refuse_loopback(node: LedgerNode, endpoints: str) -> None:
    """A Swarm node reaches the ordering members (on Docker regions) at their published
    endpoints: one on a loopback address is the Swarm task's own loopback, never the member.
    Refused with the reason rather than a node that can never commit."""
    from urllib.parse import urlsplit

    for url in filter(None, endpoints.split(",")):
        host = urlsplit(url).hostname or ""
        if host == "localhost" or host.startswith("127.") or host == "::1":
            raise PermanentRuntimeError(
                f"node {node.name} runs on Swarm region {node.region.code} and cannot reach the ordering "
                f"member at {url}: give the Docker regions of the ordering service a --publish-host that "
                "the swarm's hosts reach (not loopback)"
            )


def node_config(node: LedgerNode) -> tuple[dict[str, str], dict[str, str]]:
    """``(environment, secrets)`` of the node; secrets become files (``NodeSpec.secrets``)."""
    app = node.app
    try:
        private_key = key_private(node.private_key_encrypted)
    except ValueError as exc:
        # No key, or SECRET_KEY changed without keeping the old one in SECRET_KEY_FALLBACKS.
        raise PermanentRuntimeError(f"node {node.name}: its private key cannot be decrypted ({exc})") from None
    try:
        credential = node_credential(node)
    except ValueError as exc:
        raise PermanentRuntimeError(f"node {node.name}: its API credential cannot be decrypted ({exc})") from None
    env = {
        "BSN_CONTRACT": app.contract_template,
        "BSN_CONTRACT_PARAMS": json.dumps(app.contract_params or {}, sort_keys=True, separators=(",", ":")),
        "BSN_ADMIN_PUBLIC_KEY": app.admin_public_key,
        "BSN_NODE_KEYS": json.dumps(node_keys(app), sort_keys=True, separators=(",", ":")),
        "BSN_ORDERING": app.ordering,
    }
    secrets = {"BSN_NODE_PRIVATE_KEY": private_key, "BSN_NODE_API_CREDENTIAL": credential}
    if app.ordering == ChainApp.Ordering.ETCD:
        from apps.ordering.services import ordering_app_credentials, ordering_node_env

        # Made by the create's begin task, or by whichever node step comes first (serialised
        # on the app's row there).
        ordering = ordering_node_env(app, node, creds=ordering_app_credentials(app))
        if node.region.driver == "swarm":
            _refuse_loopback(node, ordering["BSN_ETCD_ENDPOINTS"])
        secrets["BSN_ETCD_PASSWORD"] = ordering.pop("BSN_ETCD_PASSWORD")  # a file, never the environment
        if "BSN_ETCD_TOKEN" in ordering:
            secrets["BSN_ETCD_TOKEN"] = ordering.pop("BSN_ETCD_TOKEN")
        env.update(ordering)
        peers = node_peers(node)
        env["BSN_PEERS"] = ",".join(peers)
        secrets["BSN_PEER_CREDENTIALS"] = json.dumps(
            {url: node_credential(other) for url, other in peers.items()}, sort_keys=True, separators=(",", ":")
        )
        env["BSN_ETCD_BLOCK_WINDOW"] = str(settings.BSN_ETCD_BLOCK_WINDOW)
        # Staggered first campaigns (bsn/ledger/ordering/etcd.py): the node's rank among
        # the app's nodes by region code, which every node of the app computes alike.
        rank = sum(1 for other in node.siblings if other.region.code < node.region.code)
        env["BSN_ETCD_CAMPAIGN_DELAY_MS"] = str(rank * CAMPAIGN_STAGGER_MS)
    return env, secrets

"""Verify an app's chain from the outside (``manage.py bsn_chain_verify``).

The checks are written here from docs/ledger-protocol.md, not borrowed from the node's
own verifier, so a bug there cannot hide itself; only the format primitives (canonical
JSON, RFC 6962 Merkle hash, Ed25519) are shared. Proposer signatures are checked against
the node public keys stored in the control plane's database, never against keys a node
reports about itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from apps.chainapps.models import ChainApp, LedgerNode
from apps.chainapps.node_auth import node_auth
from apps.runtime.nodeapi import NodeAuth, NodeCallError, node_call, read_verified
from bsn.ledger import merkle
from bsn.ledger.canonical import CanonicalError, canonical
from bsn.ledger.crypto import SIG_BYTES, b64decode, verify_raw

GENESIS_PREV = "0" * 64


class ChainProblem(Exception):
    """The first thing found wrong, as one line."""


@dataclass(frozen=True)
class ChainSummary:
    app_id: str
    nodes: int
    height: int
    head_hash: str
    transactions: int


def verify_block(block: Any, *, app_id: str, height: int, prev_hash: str, node_keys: dict[str, str]) -> str:
    """Check one block against its expected position; returns its hash."""
    where = f"block {height}"
    if not isinstance(block, dict) or not isinstance(block.get("header"), dict):
        raise ChainProblem(f"{where}: not a block object")
    header, txs = block["header"], block.get("txs")
    if not isinstance(txs, list):
        raise ChainProblem(f"{where}: txs is not a list")
    if header.get("app") != app_id:
        raise ChainProblem(f"{where}: belongs to app {header.get('app')!r}, not {app_id}")
    if header.get("height") != height:
        raise ChainProblem(f"{where}: header says height {header.get('height')!r}")
    if header.get("prev_hash") != prev_hash:
        raise ChainProblem(f"{where}: prev_hash {header.get('prev_hash')!r} does not link to {prev_hash}")
    try:
        computed = sha256(canonical(header)).hexdigest()
        leaves = [canonical(envelope) for envelope in txs]
    except CanonicalError as exc:
        raise ChainProblem(f"{where}: not canonical JSON ({exc})") from None
    if block.get("hash") != computed:
        raise ChainProblem(f"{where}: hash {block.get('hash')!r} is not SHA-256(canonical(header)) = {computed}")
    if header.get("tx_count") != len(txs):
        raise ChainProblem(f"{where}: tx_count {header.get('tx_count')!r} but {len(txs)} transactions")
    root = merkle.root(leaves).hex()
    if header.get("merkle_root") != root:
        raise ChainProblem(f"{where}: merkle_root {header.get('merkle_root')!r} but the transactions give {root}")
    proposer = header.get("proposer")
    key = node_keys.get(str(proposer))
    if key is None:
        raise ChainProblem(f"{where}: proposer {proposer!r} is not a node of this app")
    try:
        raw_signature = b64decode(block.get("signature"), SIG_BYTES)
    except ValueError:
        raise ChainProblem(f"{where}: signature is not base64 of {SIG_BYTES} bytes") from None
    if not verify_raw(key, raw_signature, bytes.fromhex(computed)):
        raise ChainProblem(f"{where}: signature does not verify against proposer {proposer}'s key")
    return computed


def verify_blocks(blocks: Iterator[Any] | list[Any], *, app_id: str, node_keys: dict[str, str]) -> tuple[int, str, int]:
    """Verify blocks 1..n in order; returns ``(height, head hash, transactions)``."""
    prev, height, count = GENESIS_PREV, 0, 0
    for block in blocks:
        height += 1
        prev = verify_block(block, app_id=app_id, height=height, prev_hash=prev, node_keys=node_keys)
        count += len(block["txs"])
    return height, prev, count


def _get(endpoint: str, path: str, what: str, auth: NodeAuth) -> Any:
    try:
        if path == "/chain":  # also proves the node's identity
            reply = read_verified(endpoint, path, auth=auth, timeout=10.0)
        else:
            reply = node_call(endpoint, "GET", path, auth=auth, connect_timeout=2.0, read_timeout=10.0)
    except NodeCallError as exc:
        raise ChainProblem(f"{what}: {exc}") from None
    if reply.status != 200:
        raise ChainProblem(f"{what}: HTTP {reply.status} {reply.body}")
    return reply.body


def chain_verify(app: ChainApp, *, progress: Callable[[str], None] | None = None) -> ChainSummary:
    """Every node's /chain, every block from one node, all checks; the first problem raises."""
    nodes = list(LedgerNode.objects.filter(app=app).exclude(state=LedgerNode.State.REMOVED).select_related("region"))
    if not nodes:
        raise ChainProblem(f"app {app.pk} has no nodes")
    node_keys = {str(n.pk): n.public_key for n in nodes if n.public_key}
    chains = []
    for node in nodes:
        label = f"node {node.pk} ({node.region.code})"
        if not node.endpoint:
            raise ChainProblem(f"{label} has no endpoint (state {node.state})")
        auth = node_auth(node)
        if auth is None:
            raise ChainProblem(f"{label} has no API credential yet (start the app again)")
        chain = _get(node.endpoint, "/chain", label, auth)
        if not isinstance(chain, dict):
            raise ChainProblem(f"{label}: /chain is not an object")
        if chain.get("app_id") not in (None, str(app.pk)):
            raise ChainProblem(f"{label} serves app {chain.get('app_id')!r}, not {app.pk}")
        if chain.get("public_key") not in (None, node.public_key):
            raise ChainProblem(f"{label} reports a public key that differs from the one stored for it")
        chains.append((node, label, chain, auth))
    heads = {(c.get("height"), c.get("head_hash")) for _, _, c, _ in chains}
    if len(heads) != 1:
        detail = ", ".join(f"{label} at {c.get('height')}/{str(c.get('head_hash'))[:12]}" for _, label, c, _ in chains)
        raise ChainProblem(f"nodes disagree on the head: {detail}")
    ((height, head_hash),) = heads
    if not isinstance(height, int) or height < 0:
        raise ChainProblem(f"nodes report an invalid height {height!r}")
    source, source_label, _, source_auth = chains[0]

    def blocks() -> Iterator[Any]:
        for h in range(1, height + 1):
            if progress is not None and h % 1000 == 0:
                progress(f"  verified {h}/{height} blocks")
            yield _get(source.endpoint, f"/blocks/{h}", f"{source_label} block {h}", source_auth)

    verified, last_hash, transactions = verify_blocks(blocks(), app_id=str(app.pk), node_keys=node_keys)
    if height and last_hash != head_hash:
        raise ChainProblem(f"block {height} hashes to {last_hash}, but the nodes report head {head_hash}")
    if not height and head_hash not in (None, "", GENESIS_PREV):
        raise ChainProblem(f"empty chain but head hash {head_hash!r}")
    return ChainSummary(
        app_id=str(app.pk), nodes=len(nodes), height=verified, head_hash=str(head_hash or ""), transactions=transactions
    )

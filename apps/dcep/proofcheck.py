"""Check a transfer's inclusion proof offline (docs/dcep.md, "GET transfers/{id}/proof").

Pure: no database, no network. The caller supplies what it trusts — the transfer it
holds, the tier-1 app's id and node keys, the central bank's signer name and public key
(all of them in ``GET chain``) — and gets one named result per step, every step run even
after a failure so that the report shows everything that is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bsn.ledger.block import BlockInvalid, check_block
from bsn.ledger.canonical import CanonicalError, canonical
from bsn.ledger.crypto import verify
from bsn.ledger.merkle import verify_inclusion
from bsn.ledger.tx import tx_id_of


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Expected:
    """What the verifier knows independently of the proof."""

    transfer: Mapping[str, Any]  # id, amount, from, to (as the leaf spells them)
    app_id: str
    node_keys: Mapping[str, str]  # node id -> base64 Ed25519 public key
    signer: str
    signer_public_key: str


def _leaf(proof: Mapping[str, Any], expected: Expected) -> Check:
    name = "leaf is the transfer"
    try:
        raw = proof["leaf"]
        leaf = json.loads(raw)
        if canonical(leaf) != raw.encode():
            return Check(name, False, "the leaf is not canonical JSON")
    except (KeyError, TypeError, ValueError, CanonicalError) as exc:
        return Check(name, False, f"the leaf does not decode: {exc}")
    wrong = [
        f"{key} {leaf.get(key)!r} != {value!r}"
        for key, value in expected.transfer.items()
        if leaf.get(key) != value or type(leaf.get(key)) is not type(value)
    ]
    if wrong:
        return Check(name, False, "; ".join(wrong))
    return Check(name, True, ", ".join(f"{k} {v}" for k, v in expected.transfer.items()))


def _inclusion(proof: Mapping[str, Any]) -> Check:
    name = "Merkle inclusion"
    try:
        index, size = proof["leaf_index"], proof["tree_size"]
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        root = bytes.fromhex(proof["merkle_root"])
        if type(index) is not int or type(size) is not int:
            raise TypeError("leaf_index and tree_size must be integers")
        ok = verify_inclusion(proof["leaf"].encode(), index, size, path, root)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return Check(name, False, f"malformed proof: {exc}")
    detail = f"leaf {index} of {size}, {len(path)} hashes -> root {proof['merkle_root']}"
    return Check(name, ok, detail if ok else f"{detail}: the path does not lead to this root")


def _block(anchor: Mapping[str, Any], expected: Expected) -> Check:
    name = "anchoring block (hash, Merkle root, proposer signature)"
    block = anchor.get("block")
    try:
        checked = check_block(block, expected.node_keys)
    except BlockInvalid as exc:
        return Check(name, False, str(exc))
    header = checked.header
    if header["app"] != expected.app_id:
        return Check(name, False, f"block of app {header['app']}, not the tier-1 app {expected.app_id}")
    if header["height"] != anchor.get("height"):
        return Check(name, False, f"block {header['height']}, but the anchor says height {anchor.get('height')}")
    return Check(name, True, f"block {header['height']} {checked.hash}, proposed by node {header['proposer']}")


def _find_tx(anchor: Mapping[str, Any]) -> dict | None:
    block = anchor.get("block")
    txs = block.get("txs") if isinstance(block, dict) else None
    for envelope in txs if isinstance(txs, list) else []:
        try:
            if tx_id_of(envelope["tx"]) == anchor.get("tx_id"):
                return envelope
        except (KeyError, TypeError, CanonicalError):
            continue
    return None


def _settle_tx(proof: Mapping[str, Any], envelope: dict | None, expected: Expected) -> Check:
    name = "block holds the settle transaction of this batch"
    anchor = proof.get("anchor") or {}
    if envelope is None:
        return Check(name, False, f"no transaction {anchor.get('tx_id')} in the anchoring block")
    tx = envelope["tx"]
    args = tx.get("args") or {}
    wanted = {
        "app": (tx.get("app"), expected.app_id),
        "contract": (tx.get("contract"), "dcep"),
        "function": (tx.get("function"), "settle"),
        "signer": (tx.get("signer"), expected.signer),
        "args.batch_id": (args.get("batch_id"), proof.get("settlement")),
        "args.merkle_root": (args.get("merkle_root"), proof.get("merkle_root")),
        "args.transfer_count": (args.get("transfer_count"), proof.get("tree_size")),
    }
    wrong = [f"{k} {got!r} != {want!r}" for k, (got, want) in wanted.items() if got != want]
    if wrong:
        return Check(name, False, "; ".join(wrong))
    return Check(name, True, f"tx {anchor.get('tx_id')}: dcep.settle batch {args['batch_id']}")


def _signature(envelope: dict | None, expected: Expected) -> Check:
    name = "transaction signed by the central bank"
    if envelope is None:
        return Check(name, False, "no transaction to check")
    try:
        ok = verify(expected.signer_public_key, envelope["sig"], canonical(envelope["tx"]))
    except (KeyError, TypeError, ValueError, CanonicalError) as exc:
        return Check(name, False, f"malformed signature: {exc}")
    who = f"{expected.signer} ({expected.signer_public_key})"
    return Check(name, ok, who if ok else f"the signature does not verify with {who}")


def proof_checks(proof: Mapping[str, Any], expected: Expected) -> list[Check]:
    """Every step of docs/dcep.md's offline check, in order."""
    anchor = proof.get("anchor") or {}
    envelope = _find_tx(anchor)
    return [
        _leaf(proof, expected),
        _inclusion(proof),
        _block(anchor, expected),
        _settle_tx(proof, envelope, expected),
        _signature(envelope, expected),
    ]

"""Blocks: header hash, proposer signature, Merkle root, and their verification.

``{"header": {app, height, prev_hash, merkle_root, timestamp, proposer, tx_count},
"hash": hex SHA-256(canonical(header)), "signature": base64 Ed25519 by the proposer's
node key over the 32 raw hash bytes, "txs": [signed envelopes]}`` — see
docs/ledger-protocol.md. These checks need no state; :mod:`bsn.ledger.chain` adds the
state-dependent ones (signers, nonces) when it applies a block.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from hashlib import sha256
from typing import Any

from bsn.ledger import merkle
from bsn.ledger.canonical import CanonicalError, check, dumps
from bsn.ledger.crypto import b64decode, sign, verify_raw
from bsn.ledger.tx import PreparedTx, Rejection, prepare

GENESIS_PREV = "0" * 64
HEADER_FIELDS = frozenset({"app", "height", "prev_hash", "merkle_root", "timestamp", "proposer", "tx_count"})
BLOCK_FIELDS = frozenset({"header", "hash", "signature", "txs"})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class BlockInvalid(ValueError):
    """A block fails verification; it must not be applied."""


def header_hash(header: dict[str, Any]) -> bytes:
    return sha256(dumps(header)).digest()


def block_line(block_hash: str, header_bytes: bytes, signature: str, leaves: Iterable[bytes]) -> bytes:
    """canonical(block), composed from parts already serialised (keys sort as
    "hash" < "header" < "signature" < "txs")."""
    return b"".join(
        (
            b'{"hash":"',
            block_hash.encode("ascii"),
            b'","header":',
            header_bytes,
            b',"signature":',
            dumps(signature),
            b',"txs":[',
            b",".join(leaves),
            b"]}",
        )
    )


class CheckedBlock:
    """A block that passed the stateless checks, with its parts serialised once."""

    __slots__ = ("block", "hash", "header", "line", "made_on", "txs")

    def __init__(self, block: dict[str, Any], header: dict[str, Any], txs: list[PreparedTx], line: bytes) -> None:
        self.block = block
        self.header = header
        self.hash = block["hash"]
        self.txs = txs
        self.line = line
        self.made_on: str | None = None  # the head hash make_block checked its txs against

    @property
    def height(self) -> int:
        return self.header["height"]


def make_block(
    *,
    app: str,
    height: int,
    prev_hash: str,
    timestamp: int,
    proposer: str,
    private_key: str,
    txs: list[PreparedTx],
) -> CheckedBlock:
    """Build and sign a block over already prepared transactions."""
    leaves = [p.leaf for p in txs]
    header = {
        "app": app,
        "height": height,
        "prev_hash": prev_hash,
        "merkle_root": merkle.root(leaves).hex(),
        "timestamp": timestamp,
        "proposer": proposer,
        "tx_count": len(txs),
    }
    header_bytes = dumps(header)
    digest = sha256(header_bytes).digest()
    block_hash = digest.hex()
    signature = sign(private_key, digest)
    block = {"header": header, "hash": block_hash, "signature": signature, "txs": [p.envelope for p in txs]}
    return CheckedBlock(block, header, txs, block_line(block_hash, header_bytes, signature, leaves))


def check_block(block: Any, node_keys: Mapping[str, str], *, parsed: bool = False) -> CheckedBlock:
    """Format, hash, proposer signature, tx_count and Merkle root; raises BlockInvalid.

    ``parsed=True`` says ``block`` came from :func:`bsn.ledger.canonical.loads`.
    """
    if not isinstance(block, dict) or block.keys() != BLOCK_FIELDS:
        raise BlockInvalid('a block is an object with exactly "header", "hash", "signature" and "txs"')
    header, block_hash, signature, envelopes = block["header"], block["hash"], block["signature"], block["txs"]
    if not isinstance(header, dict) or header.keys() != HEADER_FIELDS:
        raise BlockInvalid(f"the header must have exactly the fields {', '.join(sorted(HEADER_FIELDS))}")
    for name in ("height", "timestamp", "tx_count"):
        if type(header[name]) is not int or header[name] < 0:
            raise BlockInvalid(f"header.{name} must be a non-negative integer")
    for name in ("app", "proposer"):
        if type(header[name]) is not str:
            raise BlockInvalid(f"header.{name} must be a string")
    for name in ("prev_hash", "merkle_root"):
        if type(header[name]) is not str or not _HEX64.match(header[name]):
            raise BlockInvalid(f"header.{name} must be 64 lowercase hex characters")
    if header["height"] < 1:
        raise BlockInvalid("heights start at 1")
    if type(block_hash) is not str or type(signature) is not str or not isinstance(envelopes, list):
        raise BlockInvalid("hash and signature must be strings, txs a list")
    height = header["height"]
    try:
        if not parsed:
            check(header)
        header_bytes = dumps(header)
    except CanonicalError as exc:
        raise BlockInvalid(f"block {height}: {exc}") from None
    digest = sha256(header_bytes).digest()
    if digest.hex() != block_hash:
        raise BlockInvalid(f"block {height}: hash does not match the header")
    public = node_keys.get(header["proposer"])
    if public is None:
        raise BlockInvalid(f"block {height}: proposer {header['proposer']!r} is not one of the app's nodes")
    try:
        raw_signature = b64decode(signature, 64)
    except ValueError:
        raise BlockInvalid(f"block {height}: signature is not base64 of 64 bytes") from None
    if not verify_raw(public, raw_signature, digest):
        raise BlockInvalid(f"block {height}: signature is not the proposer's")
    if header["tx_count"] != len(envelopes):
        raise BlockInvalid(f"block {height}: tx_count {header['tx_count']} but {len(envelopes)} txs")
    txs = []
    for index, envelope in enumerate(envelopes):
        try:
            txs.append(prepare(envelope, parsed=parsed))
        except Rejection as exc:
            raise BlockInvalid(f"block {height}: tx {index} is malformed: {exc.detail}") from None
    leaves = [p.leaf for p in txs]
    if merkle.root(leaves).hex() != header["merkle_root"]:
        raise BlockInvalid(f"block {height}: Merkle root does not match its transactions")
    return CheckedBlock(block, header, txs, block_line(block_hash, header_bytes, signature, leaves))


def verify_chain(blocks: Iterable[dict[str, Any]], node_keys: Mapping[str, str], app: str | None = None) -> int:
    """Check a chain from height 1: links, hashes, proposer signatures, Merkle roots.

    Transaction signatures depend on the app's users (state); a node checks them as it
    applies blocks. Returns the height reached; raises BlockInvalid.
    """
    prev_hash, height, last_ts = GENESIS_PREV, 0, 0
    for block in blocks:
        checked = check_block(block, node_keys)
        header = checked.header
        if header["height"] != height + 1:
            raise BlockInvalid(f"expected height {height + 1}, got {header['height']}")
        if header["prev_hash"] != prev_hash:
            raise BlockInvalid(f"block {header['height']}: prev_hash does not link to block {height}")
        if app is not None and header["app"] != app:
            raise BlockInvalid(f"block {header['height']}: belongs to app {header['app']!r}")
        if header["timestamp"] < last_ts:
            raise BlockInvalid(f"block {header['height']}: timestamp goes backwards")
        prev_hash, height, last_ts = checked.hash, header["height"], header["timestamp"]
    return height

"""Transactions: envelope structure, ``tx_id``, stateless checks and signing.

A signed envelope is ``{"tx": {...}, "sig": "<base64>"}`` (docs/ledger-protocol.md).
:func:`prepare` checks the structure and computes, once, the canonical bytes that the
signature, the ``tx_id``, the Merkle leaf and the blocks file all reuse.
"""

from __future__ import annotations

import os
import re
import time
from hashlib import sha256
from typing import Any

from bsn.ledger.canonical import CanonicalError, canonical, check, dumps, encode_string
from bsn.ledger.state import pair_key

TX_FIELDS = frozenset({"app", "contract", "function", "args", "signer", "nonce", "timestamp"})
ENVELOPE_FIELDS = frozenset({"tx", "sig"})
MAX_NONCE = 64
USER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ADMIN = "_admin"

# Rejection codes (HTTP 400); such a transaction never reaches a block.
MALFORMED = "malformed"
WRONG_APP = "wrong_app"
UNKNOWN_SIGNER = "unknown_signer"
BAD_SIGNATURE = "bad_signature"
REPLAYED_NONCE = "replayed_nonce"
STALE_TIMESTAMP = "stale_timestamp"
UNKNOWN_FUNCTION = "unknown_function"
BAD_ARGUMENTS = "bad_arguments"
TOO_LARGE = "too_large"  # the envelope is over BSN_TX_MAX_BYTES in canonical JSON
TOO_DEEP = "too_deep"  # the envelope nests JSON deeper than MAX_DEPTH levels
REJECTION_CODES = (
    MALFORMED,
    WRONG_APP,
    UNKNOWN_SIGNER,
    BAD_SIGNATURE,
    REPLAYED_NONCE,
    STALE_TIMESTAMP,
    UNKNOWN_FUNCTION,
    BAD_ARGUMENTS,
    TOO_LARGE,
    TOO_DEEP,
)


class Rejection(Exception):
    """A transaction is refused before ordering: ``code`` is one of REJECTION_CODES."""

    def __init__(self, code: str, detail: str, tx_id: str | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.tx_id = tx_id


class Envelope(dict):
    """A signed envelope (still a plain dict to JSON and to orderers) that remembers
    its prepared form, so no node serialises or verifies it twice."""

    __slots__ = ("prepared",)


class PreparedTx:
    """An envelope with its canonical bytes computed once."""

    __slots__ = (
        "digest",
        "envelope",
        "fresh",
        "key",
        "leaf",
        "nonce",
        "pair",
        "sig",
        "signer",
        "tx",
        "tx_bytes",
        "tx_id",
        "valid",
    )

    def __init__(self, envelope: Envelope, tx: dict[str, Any], tx_bytes: bytes, sig: str) -> None:
        self.envelope = envelope
        self.tx = tx
        self.tx_bytes = tx_bytes  # canonical(tx): what the signer signed
        self.digest = sha256(tx_bytes).digest()
        self.tx_id = self.digest.hex()
        self.sig = sig
        self.signer = signer = tx["signer"]
        self.nonce = nonce = tx["nonce"]
        self.pair = pair_key(signer, nonce)  # the replay index key
        # canonical(envelope), composed: keys sort as "sig" < "tx".
        self.leaf = b'{"sig":%s,"tx":%s}' % (encode_string(sig), tx_bytes)
        self.key: str | None = None  # the public key the signature verified against, once verified
        self.fresh = False  # set by LedgerCore.precheck: newly admitted, to be ordered
        self.valid = False  # passed the stateless checks (app, function, arguments) here


def prepare(envelope: Any, *, parsed: bool = False) -> PreparedTx:
    """Check the envelope's structure and compute its canonical forms.

    ``parsed=True`` says the value came from :func:`bsn.ledger.canonical.loads` (no
    floats possible), which skips the type walk. Raises ``Rejection(malformed)``.
    """
    if isinstance(envelope, Envelope):
        prepared = getattr(envelope, "prepared", None)
        if prepared is not None:
            return prepared
    if not isinstance(envelope, dict) or envelope.keys() != ENVELOPE_FIELDS:
        raise Rejection(MALFORMED, 'a signed envelope is an object with exactly "tx" and "sig"')
    tx, sig = envelope["tx"], envelope["sig"]
    if type(sig) is not str:
        raise Rejection(MALFORMED, '"sig" must be a base64 string')
    if not isinstance(tx, dict) or tx.keys() != TX_FIELDS:
        raise Rejection(MALFORMED, f'"tx" must be an object with exactly the fields {", ".join(sorted(TX_FIELDS))}')
    for name in ("app", "contract", "function", "signer", "nonce"):
        if type(tx[name]) is not str:
            raise Rejection(MALFORMED, f'"tx.{name}" must be a string')
    if not 1 <= len(tx["nonce"]) <= MAX_NONCE:
        raise Rejection(MALFORMED, f'"tx.nonce" must be 1-{MAX_NONCE} characters')
    if type(tx["timestamp"]) is not int or tx["timestamp"] < 0:
        raise Rejection(MALFORMED, '"tx.timestamp" must be a non-negative integer (milliseconds)')
    if not isinstance(tx["args"], dict):
        raise Rejection(MALFORMED, '"tx.args" must be an object')
    try:
        if not parsed:
            check(tx)
        tx_bytes = dumps(tx)
    except (CanonicalError, ValueError) as exc:
        raise Rejection(MALFORMED, str(exc)) from None
    env = envelope if isinstance(envelope, Envelope) else Envelope(envelope)
    prepared = PreparedTx(env, tx, tx_bytes, sig)
    env.prepared = prepared
    return prepared


def release(prepared: PreparedTx) -> None:
    """Break the envelope <-> prepared reference cycle once the core is done with it, so
    the memory goes back when the last reference does rather than at a rare full
    garbage collection (large envelopes would otherwise pile up)."""
    envelope = prepared.envelope
    if getattr(envelope, "prepared", None) is prepared:
        envelope.prepared = None


def tx_id_of(tx: dict[str, Any]) -> str:
    """Hex SHA-256 of canonical(tx)."""
    return sha256(canonical(tx)).hexdigest()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_nonce() -> str:
    return os.urandom(16).hex()


def make_tx(
    app: str,
    contract: str,
    function: str,
    args: dict[str, Any],
    signer: str,
    *,
    nonce: str | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """An unsigned transaction body with a random nonce and the current time by default."""
    return {
        "app": app,
        "contract": contract,
        "function": function,
        "args": args,
        "signer": signer,
        "nonce": new_nonce() if nonce is None else nonce,
        "timestamp": now_ms() if timestamp is None else timestamp,
    }


def sign_tx(tx: dict[str, Any], private_key_b64: str) -> dict[str, Any]:
    """The signed envelope ``{"tx", "sig"}`` for ``tx`` (a plain dict, ready for JSON)."""
    from bsn.ledger.crypto import sign

    return {"tx": tx, "sig": sign(private_key_b64, canonical(tx))}

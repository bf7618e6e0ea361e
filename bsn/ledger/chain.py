"""The ledger core: verifies, executes and persists blocks; prechecks transactions.

One :class:`LedgerCore` per node. Thread-safe: the orderer thread calls
:meth:`~LedgerCore.make_block` and :meth:`~LedgerCore.apply_committed` while HTTP
threads call :meth:`~LedgerCore.precheck`, :meth:`~LedgerCore.wait_receipts` and the
lookups. A block is persisted (one write + fsync) before state changes, so whatever a
client saw acknowledged survives a crash. State lives on disk (:mod:`bsn.ledger.state`):
at start every stored block is checked again (canonical form, hash, proposer signature,
links, Merkle root) and the blocks the state database has not applied yet -- all of them
when it is missing -- are verified in full (every transaction signature, signers,
nonces) and executed. A chain that does not verify stops the node.

Signature checks happen once per node: a transaction prechecked here remembers the key
its signature verified against, so applying the block that carries it does not verify
it again; blocks from elsewhere are verified in full.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from bsn.ledger import crypto
from bsn.ledger.block import GENESIS_PREV, BlockInvalid, CheckedBlock, check_block
from bsn.ledger.block import make_block as build_block
from bsn.ledger.blockstore import BlockStore, StoreError
from bsn.ledger.canonical import MAX_DEPTH, depth_within, dumps, loads
from bsn.ledger.config import Config
from bsn.ledger.contracts import ADMIN, BadArguments, Context, ContractFailure, build
from bsn.ledger.state import STATE_NAME, State, StateError, make_receipt, plain_receipt_json, root_of_writes
from bsn.ledger.tx import (
    BAD_ARGUMENTS,
    BAD_SIGNATURE,
    REPLAYED_NONCE,
    STALE_TIMESTAMP,
    TOO_DEEP,
    TOO_LARGE,
    UNKNOWN_FUNCTION,
    UNKNOWN_SIGNER,
    WRONG_APP,
    PreparedTx,
    Rejection,
    now_ms,
    prepare,
    release,
    tx_id_of,
)

NODE_KEY_NAME = "node.key"
_MISSING = object()
_MAX_DROPPED = 10000  # rejection receipts of transactions a block left out
_MAX_VERIFIED = 20000  # (tx_id -> signature, key) of signatures verified but not yet in a block
_MAX_RECENT = 4096  # receipts of the last blocks kept in memory for the clients waiting on them
# Blocks committed by earlier versions may hold values nested up to ~1,000 levels (the
# JSON parser's recursion limit then); they must still parse and serialise on replay.
# New transactions are refused beyond MAX_DEPTH (64) levels.
_RECURSION_LIMIT = 5000
# Group commit of the state database: its transaction takes up to this many blocks, and a
# background flush commits it once no block came for _FLUSH_IDLE_S seconds. The blocks
# file is durable per block either way; a crash only means re-applying these blocks.
_GROUP_BLOCKS = 16
_MAX_USER_KEYS = 10000
_FLUSH_IDLE_S = 0.1
_SHRINK_IDLE_S = 5.0  # then SQLite's page cache is given back too

__all__ = ["BlockInvalid", "ChainError", "LedgerCore", "Rejection", "StoreError"]


class ChainError(RuntimeError):
    """The node cannot serve this chain (it does not verify, or the key is unusable)."""


class _Rebuild(Exception):
    """The state database does not match the blocks file: rebuild it by replaying."""


class Block(dict):
    """A block dict made here; remembers its checked form so applying it is cheap."""

    __slots__ = ("checked",)


class _Waiter:
    __slots__ = ("event", "remaining")

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining
        self.event = threading.Event()


def _is_plain(receipt: dict[str, Any]) -> bool:
    """Committed (so no error) with no result or events: the state stores no JSON for it."""
    return receipt["status"] == "committed" and receipt.get("result") is None and not receipt.get("events")


def receipt_json(receipt: dict[str, Any]) -> bytes:
    """JSON of a receipt; the plain shape without the encoder."""
    if _is_plain(receipt):
        return plain_receipt_json(receipt["height"], receipt["index"], receipt["tx_id"])
    return dumps(receipt)


def _replayed(p: PreparedTx) -> Rejection:
    return Rejection(REPLAYED_NONCE, f"nonce {p.nonce!r} of {p.signer} was already used", p.tx_id)


def _rejected(tx_id: str | None, code: str, detail: str) -> dict[str, Any]:
    return {"tx_id": tx_id, "status": "rejected", "error": code, "detail": detail}


class LedgerCore:
    """A verified chain, its state, and the waiters for receipts."""

    def __init__(self, config: Config, *, warn: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.app_id = config.app_id
        self.node_id = config.node_id
        self.contracts = build(config.contract, config.contract_params)
        self._warn = warn or (lambda message: None)
        self.store = BlockStore(config.data_dir, warn=warn)
        self.state: State = None  # type: ignore[assignment]  # opened by open()
        self.max_tx_bytes = config.tx_max_bytes
        self.max_age_ms = config.tx_max_age_s * 1000
        self._lock = threading.RLock()  # state, indexes, pending, waiters
        self._apply_lock = threading.RLock()  # one block applied at a time
        self._height = 0
        self._head_hash = GENESIS_PREV
        self._last_ts = 0
        self._pending: dict[str, PreparedTx] = {}  # prechecked here, not in a block yet
        self._pending_nonces: dict[str, str] = {}  # pair_key -> tx_id pending here
        self._verified: dict[str, tuple[str, str]] = {}  # tx_id -> (sig, key) checked here
        self._dropped: dict[str, dict[str, Any]] = {}
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._trusted = 0  # during open: the height the state database already holds
        self._last_apply = 0.0  # monotonic time of the last block applied
        self._user_keys: dict[str, Any] = {}  # signer -> key (None: no such user); cleared by _config writes
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._waiters: dict[str, list[_Waiter]] = {}
        self.rejected = 0
        self.failure: str | None = None
        self.private_key = ""
        self.public_key = ""
        self.node_keys: dict[str, str] = {}

    # Start and stop.

    def open(self) -> int:
        """Lock the data dir, load the node key, replay and verify the whole chain.

        Raises StoreError or ChainError; returns the height reached.
        """
        if sys.getrecursionlimit() < _RECURSION_LIMIT:
            sys.setrecursionlimit(_RECURSION_LIMIT)
        self.store.lock()
        if os.path.exists(os.path.join(self.config.data_dir, "wal.jsonl")) and self.store.size == 0:
            self._warn("ignoring wal.jsonl from the unsigned node of an earlier version")
        try:
            self._load_keys()
            self.state = State(
                os.path.join(self.config.data_dir, STATE_NAME), cache_bytes=self.config.state_cache_bytes
            )
            try:
                self._replay()
            except _Rebuild as exc:
                self._warn(f"rebuilding the state database from the blocks file: {exc}")
                self.state.reset()
                self._replay()
            self.state.commit()
        except BlockInvalid as exc:
            self._close_all()
            raise ChainError(f"the chain in {self.store.path} does not verify: {exc}") from None
        except StateError as exc:
            self._close_all()
            raise StoreError(str(exc)) from None
        except BaseException:
            self._close_all()
            raise
        self._flusher = threading.Thread(target=self._flush_loop, name="state-flush", daemon=True)
        self._flusher.start()
        return self._height

    def _flush_loop(self) -> None:
        shrunk = True
        while not self._stop.wait(_FLUSH_IDLE_S):
            idle = time.monotonic() - self._last_apply
            try:
                if self.state.uncommitted and idle >= _FLUSH_IDLE_S:
                    self.state.commit()
                    shrunk = False
                elif not shrunk and idle >= _SHRINK_IDLE_S:
                    self.state.shrink()
                    shrunk = True
            except StateError as exc:
                self.fail(str(exc))
                return
            except Exception:  # noqa: BLE001 - closed meanwhile (stop is set) or a bug: stop flushing
                if not self._stop.is_set():
                    self.fail("the state database flush stopped")
                return

    def _replay(self) -> None:
        self._trusted = self.state.height
        self._height, self._head_hash, self._last_ts = 0, GENESIS_PREV, 0
        self.store.replay(self._replay_line)
        if self._height < self._trusted:
            raise _Rebuild(f"it holds height {self._trusted}, the blocks file ends at {self._height}")

    def _close_all(self) -> None:
        if self.state is not None:
            self.state.close()
        self.store.close()

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
        with self._apply_lock:
            self._close_all()

    def _load_keys(self) -> None:
        config = self.config
        private = config.node_private_key
        if private is None:
            if config.ordering != "solo":
                raise ChainError("a node key (BSN_NODE_PRIVATE_KEY) is required outside solo mode")
            private = self._data_dir_key()
        self.private_key = private
        self.public_key = crypto.public_key_of(private)
        listed = config.node_keys.get(self.node_id)
        if listed is not None and listed != self.public_key:
            raise ChainError(f"BSN_NODE_PRIVATE_KEY does not match BSN_NODE_KEYS[{self.node_id}]")
        self.node_keys = {**config.node_keys, self.node_id: self.public_key}

    def _data_dir_key(self) -> str:
        """Solo/dev: the node key kept in ``<data>/node.key``, generated on first start."""
        path = os.path.join(self.config.data_dir, NODE_KEY_NAME)
        try:
            with open(path, encoding="ascii") as f:
                key = f.read().strip()
        except FileNotFoundError:
            key = crypto.generate_private_key()
            tmp = path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, key.encode("ascii") + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dir_fd = os.open(self.config.data_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return key
        except (OSError, UnicodeDecodeError) as exc:
            raise ChainError(f"cannot read the node key {path}: {exc}") from None
        try:
            crypto.b64decode(key, 32)
        except ValueError as exc:
            raise ChainError(f"the node key {path} is not base64 of 32 bytes: {exc}") from None
        return key

    def _replay_line(self, line: bytes, block: Any, offset: int) -> None:
        checked = check_block(block, self.node_keys, parsed=True)
        if checked.line != line:
            raise BlockInvalid(f"block {checked.height} is not stored in canonical form")
        if checked.height > self._trusted:
            self._apply(checked, at=offset)
            return
        # Applied to the state database already (after it was verified in full): check
        # the block's place in the chain; the state is the one after it.
        self._check_header(checked)
        for p in checked.txs:
            release(p)
        self._height, self._head_hash, self._last_ts = checked.height, checked.hash, checked.header["timestamp"]
        if checked.height == self._trusted and checked.hash != self.state.head_hash:
            raise _Rebuild(f"its block {self._trusted} is not the one in the blocks file")

    # Read-only views.

    @property
    def height(self) -> int:
        return self._height

    @property
    def head_hash(self) -> str:
        return self._head_hash

    def tip(self) -> tuple[int, str]:
        """(height, head hash), read together (one block may commit between two reads)."""
        with self._lock:
            return self._height, self._head_hash

    @property
    def last_timestamp(self) -> int:
        """The head block's timestamp (ms); 0 before the first block."""
        return self._last_ts

    @property
    def state_root(self) -> str:
        return self.state.root.hex()

    @property
    def healthy(self) -> bool:
        return self.failure is None and self.store.failed is None

    def users(self) -> list[str]:
        return self.state.keys("_config")

    def public_key_of(self, signer: str) -> str | None:
        """The key ``signer`` signs with now (``_admin``: the configured admin key)."""
        if signer == ADMIN:
            return self.config.admin_public_key
        keys = self._user_keys
        key = keys.get(signer, _MISSING)
        if key is _MISSING:
            key = self.state.get("_config", signer)
            if len(keys) >= _MAX_USER_KEYS:
                keys.clear()
            keys[signer] = key
        return key

    def receipt(self, tx_id: str) -> dict[str, Any] | None:
        return self._lookup(tx_id)

    def transaction_json(self, tx_id: str) -> bytes | None:
        """``{"receipt", "tx"}`` of a transaction in the chain as JSON bytes, composed
        from stored bytes (the envelope is never parsed, however deeply it nests)."""
        found = self.state.tx_location(tx_id)
        if found is None:
            return None
        receipt, offset, length = found
        envelope = self.store.read_at(offset, length)
        if envelope is None:
            return None
        return b'{"receipt":' + receipt + b',"tx":' + envelope + b"}"

    def transaction(self, tx_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(receipt, signed envelope) of a transaction in the chain."""
        raw = self.transaction_json(tx_id)
        if raw is None:
            return None
        both = loads(raw)
        return both["receipt"], both["tx"]

    def block_line(self, height: int) -> bytes | None:
        """canonical(block) as stored, or None."""
        found = self.state.block_location(height)
        return None if found is None else self.store.read_at(found[1], found[2])

    def block(self, height: int) -> dict[str, Any] | None:
        line = self.block_line(height)
        return None if line is None else loads(line)

    def events(self, after: int, limit: int, max_bytes: int) -> tuple[int, list[dict[str, Any]], int]:
        """(head height, events, next_after): the contract events of the committed
        transactions in blocks ``after+1 .. after+limit`` (docs/ledger-protocol.md "Events").

        Whole blocks only: reading stops after the block that takes the block bytes read
        or the events' JSON past ``max_bytes`` (one block is always read), and
        ``next_after`` is the last block read, so a reader resumes from there.
        """
        head = self._height
        last = min(head, after + limit)
        events: list[dict[str, Any]] = []
        read = 0
        height = after
        while height < last and read <= max_bytes:
            height += 1
            line = self.block_line(height)
            if line is None:  # pragma: no cover - every height up to the head is stored
                raise ChainError(f"block {height} is missing from the blocks file")
            read += len(line)
            block = loads(line)
            envelopes = block["txs"]
            tx_ids = [tx_id_of(envelope["tx"]) for envelope in envelopes]
            receipts = self.state.stored_receipts(tx_ids)
            for index, (tx_id, envelope) in enumerate(zip(tx_ids, envelopes, strict=True)):
                receipt = receipts.get(tx_id)
                if receipt is None or receipt["status"] != "committed" or not receipt.get("events"):
                    continue
                tx = envelope["tx"]
                for seq, event in enumerate(receipt["events"]):
                    item = {
                        "height": height,
                        "index": index,
                        "seq": seq,
                        "tx_id": tx_id,
                        "contract": tx["contract"],
                        "function": tx["function"],
                        "signer": tx["signer"],
                        "name": event["name"],
                        "payload": event["payload"],
                        "block_time_ms": block["header"]["timestamp"],
                    }
                    read += len(dumps(item))
                    events.append(item)
        return head, events, height

    def value(self, contract: str, key: str) -> Any:
        """Current value of ``key`` in a deployed contract; None when absent."""
        return self.state.get(contract, key)

    def query(self, contract_name: str, function: str, args: Any) -> Any:
        """Answer a read-only function; raises Rejection (unknown_function, bad_arguments)."""
        contract = self.contracts.get(contract_name) if isinstance(contract_name, str) else None
        if contract is None:
            raise Rejection(UNKNOWN_FUNCTION, f"contract {contract_name!r} is not deployed on this app")
        if not isinstance(function, str) or function not in contract.queries:
            raise Rejection(UNKNOWN_FUNCTION, f"{contract_name} has no read-only function {function!r}")
        if not isinstance(args, dict):
            raise Rejection(BAD_ARGUMENTS, "args must be an object")
        try:
            contract.validate_query(function, args)
        except BadArguments as exc:
            raise Rejection(BAD_ARGUMENTS, str(exc)) from None
        with self._lock:  # one state: no block is applied between a query's reads
            if contract.keeps_history and function == "history":
                return self.state.history(contract_name, args["key"])
            return contract.query(lambda key: self.state.get(contract_name, key), function, args)

    # Admission.

    def _stateless(self, p: PreparedTx) -> None:
        """App, contract, function and arguments: depends on the tx alone, so checked once."""
        if p.valid:
            return
        tx = p.tx
        if tx["app"] != self.app_id:
            raise Rejection(WRONG_APP, f"this node serves app {self.app_id}, not {tx['app']}", p.tx_id)
        contract = self.contracts.get(tx["contract"])
        if contract is None:
            raise Rejection(UNKNOWN_FUNCTION, f"contract {tx['contract']!r} is not deployed on this app", p.tx_id)
        function = tx["function"]
        if function not in contract.functions:
            hint = " (read-only: use POST /query)" if function in contract.queries else ""
            raise Rejection(UNKNOWN_FUNCTION, f"{contract.name} has no function {function!r}{hint}", p.tx_id)
        try:
            contract.validate(function, tx["args"], tx["signer"])
        except BadArguments as exc:
            raise Rejection(BAD_ARGUMENTS, str(exc), p.tx_id) from None
        p.valid = True

    def precheck(self, envelope: Any, *, parsed: bool = False, depth_checked: bool = False) -> PreparedTx:
        """Admit a signed envelope for ordering, or raise Rejection.

        ``depth_checked``: the request body it came in was found nested at most
        MAX_DEPTH levels per envelope (:func:`bsn.ledger.canonical.depth_within`).

        Returns the prepared transaction; ``fresh`` is True when it was registered
        now (hand ``prepared.envelope`` to the orderer) and False when it is already
        in the chain or waiting for a block (just wait for its receipt).
        """
        result = self.precheck_many([envelope], parsed=parsed, depth_checked=depth_checked)[0]
        if isinstance(result, Rejection):
            raise result
        return result

    def precheck_many(
        self, envelopes: list[Any], *, parsed: bool = False, depth_checked: bool = False
    ) -> list[PreparedTx | Rejection]:
        """:meth:`precheck` of each envelope, in order: the prepared transaction or the
        Rejection. The chain is asked once for all of them (which are in it already,
        which nonces are used), not once per transaction, and the core's lock is taken
        twice for the batch: signatures are checked between the two, without it."""
        out: list[PreparedTx | Rejection] = []
        for envelope in envelopes:
            try:
                out.append(prepare(envelope, parsed=parsed))
            except Rejection as exc:
                out.append(exc)
        prepared = [p for p in out if type(p) is PreparedTx]
        with self._lock:
            height = self._height
            if len(prepared) == 1:  # one indexed lookup each is cheaper than IN (...)
                p = prepared[0]
                in_chain = {p.tx_id} if self.state.has_tx(p.tx_id) else set()
                used = {p.pair} if self.state.has_pair(p.pair) else set()
            else:
                in_chain = self.state.known_txs([p.tx_id for p in prepared])
                used = self.state.used_pairs([p.pair for p in prepared])
        pending = self._pending
        app_id, max_age, now = self.app_id, self.max_age_ms, now_ms()
        # 1. What depends on the transaction alone (and the lookups above).
        todo: list[int] = []
        for index, p in enumerate(out):
            if type(p) is not PreparedTx:
                continue
            tx = p.tx
            try:
                if tx["app"] != app_id:
                    raise Rejection(WRONG_APP, f"this node serves app {app_id}, not {tx['app']}", p.tx_id)
                if p.tx_id in in_chain or p.tx_id in pending:
                    p.fresh = False
                    continue
                if not p.valid:
                    self._limits(p, checked_depth=depth_checked)
                    self._stateless(p)
                if abs(now - tx["timestamp"]) > max_age:
                    raise Rejection(
                        STALE_TIMESTAMP,
                        f"timestamp is more than {self.config.tx_max_age_s} s away from the node's clock",
                        p.tx_id,
                    )
                if p.pair in used:
                    raise _replayed(p)
            except Rejection as exc:
                out[index] = exc
                continue
            todo.append(index)
        # 2. Signers' keys and nonces waiting for a block, under the lock.
        keys: list[str | None] = []
        with self._lock:
            for index in todo:
                p = out[index]
                key = self.public_key_of(p.signer)
                if key is None:
                    out[index] = Rejection(UNKNOWN_SIGNER, f"{p.signer!r} is not a user of this app", p.tx_id)
                elif self._pending_nonces.get(p.pair, p.tx_id) != p.tx_id:
                    out[index] = _replayed(p)
                keys.append(key)
        # 3. Signatures, without the lock (the only work that must be done per transaction).
        verified: list[int] = []
        for index, key in zip(todo, keys, strict=True):
            p = out[index]
            if type(p) is not PreparedTx:
                continue
            if p.key != key:
                if not crypto.verify(key, p.sig, p.tx_bytes):
                    out[index] = Rejection(
                        BAD_SIGNATURE, f"the signature does not verify with {p.signer}'s key", p.tx_id
                    )
                    continue
                p.key = key
            verified.append(index)
        # 4. Register them for ordering, looking again at what changed meanwhile: when a
        # block was applied since the lookup, the chain is asked again, once for all
        # (blocks are applied under this same lock, so what it answers stays true).
        with self._lock:
            in_chain = used = ()
            if self._height != height:
                candidates = [out[index] for index in verified]
                in_chain = self.state.known_txs([p.tx_id for p in candidates])
                used = self.state.used_pairs([p.pair for p in candidates])
            pending_nonces, dropped = self._pending_nonces, self._dropped
            for index in verified:
                p = out[index]
                if p.tx_id in pending or p.tx_id in in_chain:
                    p.fresh = False
                    continue
                if p.pair in used or pending_nonces.get(p.pair, p.tx_id) != p.tx_id:
                    out[index] = _replayed(p)
                    continue
                pending[p.tx_id] = p
                pending_nonces[p.pair] = p.tx_id
                dropped.pop(p.tx_id, None)
                p.fresh = True
            self.rejected += sum(1 for item in out if type(item) is not PreparedTx)
        for p in prepared:
            if not p.fresh and pending.get(p.tx_id) is not p:
                release(p)  # rejected, or only its tx_id is used from here
        return out

    def _limits(self, p: PreparedTx, *, checked_depth: bool) -> None:
        """Size and nesting of a new transaction (blocks already committed are not held to them).

        ``checked_depth``: the request body it came in was already checked for depth."""
        if len(p.leaf) > self.max_tx_bytes:
            raise Rejection(
                TOO_LARGE,
                f"the signed envelope is {len(p.leaf)} bytes in canonical JSON; at most {self.max_tx_bytes}",
                p.tx_id,
            )
        if not checked_depth and not depth_within(p.tx_bytes, MAX_DEPTH - 1):
            raise Rejection(TOO_DEEP, f"the envelope nests JSON deeper than {MAX_DEPTH} levels", p.tx_id)

    def forget(self, prepared: Iterable[PreparedTx]) -> None:
        """Unregister prechecked transactions that could not be handed to ordering."""
        with self._lock:
            for p in prepared:
                if self._pending.pop(p.tx_id, None) is not None:
                    self._pending_nonces.pop(p.pair, None)
                release(p)

    # Ordering.

    def make_block(self, envelopes: list[dict[str, Any]], timestamp_ms: int, *, parsed: bool = False) -> dict[str, Any]:
        """The next block over ``envelopes``, signed by this node as proposer.

        ``parsed=True``: envelopes not prechecked here came from
        :func:`bsn.ledger.canonical.loads` (no type walk needed).

        Re-checks every envelope against the current state: one already in the chain is
        skipped, one whose nonce was used (in the chain or earlier in this batch), whose
        signer is unknown or whose signature fails is left out with a rejection
        receipt. The block may hold no transactions when everything was left out (do not
        commit such a block). Does not change state: commit with apply_committed.
        """
        chosen: list[PreparedTx] = []
        seen: set[str] = set()
        with self._apply_lock:
            prepared = []
            for envelope in envelopes:
                p = getattr(envelope, "prepared", None)  # prechecked here: prepared already
                if p is None:
                    try:
                        p = prepare(envelope, parsed=parsed)
                    except Rejection as exc:
                        self._drop(None, exc)
                        continue
                prepared.append(p)
            # A transaction still pending here is known not to be in the chain, nor its
            # nonce used (applying a block evicts pending ones it conflicts with); the
            # others are looked up together, two queries for the block.
            pending = self._pending
            others = [p for p in prepared if pending.get(p.tx_id) is not p]
            in_chain = self.state.known_txs([p.tx_id for p in others]) if others else set()
            used = self.state.used_pairs([p.pair for p in others]) if others else set()
            for p in prepared:
                if p.tx_id in in_chain:
                    release(p)
                    continue
                pair = p.pair
                try:
                    if pair in used or pair in seen:
                        raise _replayed(p)
                    if not p.valid:  # not prechecked here: held to the limits now
                        self._limits(p, checked_depth=False)
                        self._stateless(p)
                    self._check_signature(p)
                except Rejection as exc:
                    self._drop(p, exc)
                    continue
                seen.add(pair)
                chosen.append(p)
            checked = build_block(
                app=self.app_id,
                height=self._height + 1,
                prev_hash=self._head_hash,
                timestamp=max(timestamp_ms, self._last_ts),
                proposer=self.node_id,
                private_key=self.private_key,
                txs=chosen,
            )
            checked.made_on = self._head_hash
        block = Block(checked.block)
        block.checked = checked
        return block

    def _check_signature(self, p: PreparedTx) -> None:
        """Verify ``p``'s signature against its signer's current key, once per node."""
        key = self.public_key_of(p.signer)
        if key is None:
            raise Rejection(UNKNOWN_SIGNER, f"{p.signer!r} is not a user of this app", p.tx_id)
        if p.key == key:
            return
        known = self._verified.get(p.tx_id)
        if known is None:
            mine = self._pending.get(p.tx_id)
            if mine is not None and mine.key is not None:
                known = (mine.sig, mine.key)
        if known != (p.sig, key):
            if not crypto.verify(key, p.sig, p.tx_bytes):
                raise Rejection(BAD_SIGNATURE, f"the signature does not verify with {p.signer}'s key", p.tx_id)
            if len(self._verified) >= _MAX_VERIFIED:
                del self._verified[next(iter(self._verified))]
            self._verified[p.tx_id] = (p.sig, key)
        p.key = key

    def _drop(self, p: PreparedTx | None, exc: Rejection) -> None:
        with self._lock:
            self.rejected += 1
            if p is None:
                return
            self._pending.pop(p.tx_id, None)
            if self._pending_nonces.get(p.pair) == p.tx_id:
                del self._pending_nonces[p.pair]
            if len(self._dropped) >= _MAX_DROPPED:
                del self._dropped[next(iter(self._dropped))]
            self._dropped[p.tx_id] = _rejected(p.tx_id, exc.code, exc.detail)
            self._notify([p.tx_id])
            release(p)

    def apply_committed(self, block: dict[str, Any], *, parsed: bool = False) -> list[dict[str, Any]]:
        """Verify, execute and durably apply the next committed block; its receipts.

        ``parsed=True`` says the block came from :func:`bsn.ledger.canonical.loads`.
        A block already applied (same hash) returns its receipts again. Raises
        BlockInvalid (the block is refused, nothing changes) or StoreError (the node
        can no longer write; it reports unhealthy).
        """
        checked = getattr(block, "checked", None)
        if checked is None:
            checked = check_block(block, self.node_keys, parsed=parsed)
        return self._apply(checked)

    def _apply(self, checked: CheckedBlock, *, at: int | None = None) -> list[dict[str, Any]]:
        """Apply the next block: appended to the blocks file first, unless ``at`` gives
        the offset where it is already stored (replay)."""
        with self._apply_lock:
            height = checked.height
            if height <= self._height:
                found = self.state.block_location(height)
                if found is not None and found[0] == checked.hash:
                    return [self._lookup(p.tx_id) for p in checked.txs]
                raise BlockInvalid(f"block {height} conflicts with the block already at that height")
            self._check_header(checked)
            if getattr(checked, "made_on", None) != self._head_hash:
                # Made here on this same head, make_block checked all of it against this state.
                self._check_txs(checked)
            receipts, writes, history = self._execute(checked)
            # Each value serialised once: for the root, the kv row and its history row.
            blobs = [None if value is None else dumps(value) for _, _, value in writes]
            root = root_of_writes(self.state.root, writes, blobs)
            line = checked.line
            if at is None:
                if self.failure is not None:
                    raise StoreError(self.failure)
                try:
                    at = self.store.append(line)
                except StoreError as exc:
                    self.fail(str(exc))
                    raise
            # Where each envelope sits in the file: the line ends with ``[leaf,leaf,...]}``.
            offset = at + len(line) - 2 - sum(len(p.leaf) for p in checked.txs) - max(len(checked.txs) - 1, 0)
            rows = []
            committed = 0
            for p, receipt in zip(checked.txs, receipts, strict=True):
                size = len(p.leaf)
                if _is_plain(receipt):
                    stored = None
                    committed += 1
                else:
                    stored = dumps(receipt)
                    committed += receipt["status"] == "committed"
                rows.append((p.digest, p.pair, offset, size, stored))
                offset += size + 1
            header = checked.header
            with self._lock:
                try:
                    self.state.apply(
                        height=height,
                        head_hash=checked.hash,
                        last_ts=header["timestamp"],
                        block_at=(at, len(line)),
                        writes=writes,
                        blobs=blobs,
                        history=history,
                        txs=rows,
                        committed=committed,
                        failed=len(receipts) - committed,
                        root=root,
                        commit=self.state.uncommitted + 1 >= _GROUP_BLOCKS,
                    )
                except StateError as exc:
                    self.fail(str(exc))
                    raise StoreError(str(exc)) from None
                if any(w[0] == "_config" for w in writes):
                    self._user_keys = {}  # under the lock, after the write: no stale key is cached
                self._height = height
                self._head_hash = checked.hash
                self._last_ts = header["timestamp"]
                self._last_apply = time.monotonic()
                recent = self._recent
                evicted = []
                for p, receipt in zip(checked.txs, receipts, strict=True):
                    if self._pending.pop(p.tx_id, None) is not None:
                        self._pending_nonces.pop(p.pair, None)
                    else:
                        other = self._pending_nonces.get(p.pair)
                        if other is not None:  # another tx with this nonce made it first
                            evicted.append(self._pending[other])
                    self._verified.pop(p.tx_id, None)
                    recent[p.tx_id] = receipt
                    release(p)
                while len(recent) > _MAX_RECENT:
                    recent.popitem(last=False)
                for p in evicted:
                    self._drop(p, _replayed(p))
                if self._waiters:
                    self._notify([p.tx_id for p in checked.txs])
            return receipts

    def _check_header(self, checked: CheckedBlock) -> None:
        header, height = checked.header, checked.height
        if height != self._height + 1:
            raise BlockInvalid(f"block {height} does not follow height {self._height}")
        if header["app"] != self.app_id:
            raise BlockInvalid(f"block {height} belongs to app {header['app']!r}")
        if header["prev_hash"] != self._head_hash:
            raise BlockInvalid(f"block {height}: prev_hash does not link to block {self._height}")
        if header["timestamp"] < self._last_ts:
            raise BlockInvalid(f"block {height}: timestamp goes backwards")

    def _check_txs(self, checked: CheckedBlock) -> None:
        """Every transaction valid against the state at the start of the block."""
        seen: set[str] = set()
        used = self.state.used_pairs([p.pair for p in checked.txs])
        for index, p in enumerate(checked.txs):
            pair = p.pair
            try:
                if pair in used or pair in seen:
                    raise _replayed(p)
                self._stateless(p)
                self._check_signature(p)
            except Rejection as exc:
                raise BlockInvalid(f"block {checked.height}: tx {index} ({p.tx_id}) is invalid: {exc}") from None
            seen.add(pair)

    def _execute(self, checked: CheckedBlock) -> tuple[list[dict[str, Any]], list[list[Any]], list]:
        height, timestamp = checked.height, checked.header["timestamp"]
        overlay: dict[tuple[str, str], Any] = {}
        writes: list[list[Any]] = []
        history: list[tuple[int, str]] = []  # (index in writes, tx_id) of contracts that keep history
        receipts: list[dict[str, Any]] = []
        state_get = self.state.get
        contracts = self.contracts
        readers: dict[str, Callable[[str], Any]] = {}  # one per contract in this block

        def reader(name: str) -> Callable[[str], Any]:
            def read(key: str) -> Any:
                value = overlay.get((name, key), _MISSING)
                return state_get(name, key) if value is _MISSING else value

            return readers.setdefault(name, read)

        for index, p in enumerate(checked.txs):
            tx = p.tx
            name = tx["contract"]
            contract = contracts[name]
            read = readers.get(name) or reader(name)
            ctx = Context(tx["signer"], height, timestamp, p.tx_id, read)
            try:
                result, tx_writes, events = contract.execute(ctx, tx["function"], tx["args"])
            except ContractFailure as exc:
                receipts.append(make_receipt(p.tx_id, height, index, status="failed", error=str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - a contract bug fails the tx, deterministically
                error = f"contract error: {type(exc).__name__}: {exc}"
                receipts.append(make_receipt(p.tx_id, height, index, status="failed", error=error))
                continue
            keeps_history = contract.keeps_history
            for key, value in tx_writes:
                overlay[(name, key)] = value
                writes.append([name, key, value])
                if keeps_history:
                    history.append((len(writes) - 1, p.tx_id))
            receipts.append(make_receipt(p.tx_id, height, index, result=result, events=events))
        return receipts, writes, history

    def fail(self, reason: str) -> None:
        """Stop serving writes: storage or ordering failed; wake every waiter."""
        with self._lock:
            self.failure = reason
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.event.set()
            self._waiters.clear()

    # Waiting for receipts.

    def _notify(self, tx_ids: Iterable[str]) -> None:
        # Caller holds self._lock.
        waiters_by_tx = self._waiters
        for tx_id in tx_ids:
            waiters = waiters_by_tx.pop(tx_id, None)
            if waiters:
                for waiter in waiters:
                    waiter.remaining -= 1
                    if waiter.remaining <= 0:
                        waiter.event.set()

    def _lookup(self, tx_id: str) -> dict[str, Any] | None:
        found = self._recent.get(tx_id) or self._dropped.get(tx_id)
        if found is None and tx_id not in self._pending:
            found = self.state.receipt(tx_id)
        return found

    def wait_receipts(self, tx_ids: list[str], timeout: float) -> list[dict[str, Any] | None]:
        """Receipts (or rejection receipts) in order; None for those not ready in time."""
        with self._lock:
            found = [self._lookup(t) for t in tx_ids]
            missing = {t for t, r in zip(tx_ids, found, strict=True) if r is None}
            if not missing:
                return found
            if self.failure is None:
                waiter = _Waiter(len(missing))
                for tx_id in missing:
                    self._waiters.setdefault(tx_id, []).append(waiter)
            else:
                missing = set()
        if missing:
            waiter.event.wait(timeout)
            with self._lock:
                for tx_id in missing:
                    waiters = self._waiters.get(tx_id)
                    if waiters and waiter in waiters:
                        waiters.remove(waiter)
                        if not waiters:
                            del self._waiters[tx_id]
        with self._lock:
            return [self._lookup(t) for t in tx_ids]

    def wait_receipt(self, tx_id: str, timeout: float) -> dict[str, Any] | None:
        return self.wait_receipts([tx_id], timeout)[0]

    # Reporting.

    def info(self) -> dict[str, Any]:
        with self._lock:
            return {
                "app_id": self.app_id,
                "node_id": self.node_id,
                "public_key": self.public_key,
                "height": self._height,
                "head_hash": self._head_hash,
                "state_root": self.state.root.hex(),
                "nodes": [{"node_id": n, "public_key": k} for n, k in sorted(self.node_keys.items())],
                "users": self.state.keys("_config"),
            }

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {
                "committed": self.state.committed,
                "failed": self.state.failed,
                "rejected": self.rejected,
                "height": self._height,
                "storage_bytes": self.store.size,
            }

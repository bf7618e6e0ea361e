"""The world state a chain of blocks builds, kept on disk: contract key-values, nonces,
receipts, kv history and where each block and transaction sits in the blocks file.

Only :class:`bsn.ledger.chain.LedgerCore` mutates it, and only after the block that
changes it is durable in ``blocks.jsonl``. ``root`` chains as
SHA-256(prev_root || canonical(write_set)) (docs/ledger-protocol.md).

Storage is the standard library's ``sqlite3`` (``<data>/state.sqlite``, WAL journal,
``synchronous=NORMAL``). Blocks are written in SQLite transactions of one or more blocks
(group commit: the pages a block dirties are written once for several blocks), each
recording its ``height``, so the database is always the state after some block. It may
lag the blocks file after a crash (the blocks file is the durable record); the core then
re-applies the blocks after ``height``. Memory stays bounded as
the chain grows: SQLite's page cache is capped (``cache_kib``) and values are cached in a
small LRU (``cache_bytes``) -- the hot keys (the app's users, balances being moved).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable
from hashlib import sha256
from typing import Any

from bsn.ledger.canonical import dumps, encode_string, loads

ZERO_ROOT = bytes(32)
STATE_NAME = "state.sqlite"
FORMAT = 2  # bump (and rebuild from the blocks file) when the schema changes
_MISSING = object()
_ENTRY_OVERHEAD = 160  # bytes a cached entry costs beyond its value's JSON (dict slot, tuple, key)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    format INTEGER NOT NULL, height INTEGER NOT NULL, head_hash TEXT NOT NULL,
    last_ts INTEGER NOT NULL, root BLOB NOT NULL, committed INTEGER NOT NULL, failed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY, hash TEXT NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    contract TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (contract, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS txs (
    tx_id BLOB PRIMARY KEY, pair TEXT NOT NULL UNIQUE, height INTEGER NOT NULL, idx INTEGER NOT NULL,
    off INTEGER NOT NULL, len INTEGER NOT NULL, receipt BLOB
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    contract TEXT NOT NULL, key TEXT NOT NULL, height INTEGER NOT NULL, idx INTEGER NOT NULL,
    tx_id TEXT NOT NULL, value BLOB, PRIMARY KEY (contract, key, height, idx)
) WITHOUT ROWID;
"""
# WITHOUT ROWID: one b-tree per table instead of a rowid table plus its key index. A
# transaction is one row (its tx_id, its pair index entry): where its envelope sits in
# the blocks file and its receipt, NULL for the plain committed one (no result, error or
# events: most of them), which make_receipt() rebuilds from the row.


def next_root(prev_root: bytes, write_set: list[list[Any]]) -> bytes:
    """State root after a block whose committed transactions wrote ``write_set``."""
    return sha256(prev_root + dumps(write_set)).digest()


def root_of_writes(prev_root: bytes, writes: list[list[Any]], blobs: list[bytes | None]) -> bytes:
    """:func:`next_root`, with canonical(write_set) composed from each value's canonical
    bytes (``blobs[i]`` = canonical(writes[i][2]), None for a delete) instead of
    serialising every value a second time: the same bytes, one join."""
    parts = []
    for (contract, key, _), blob in zip(writes, blobs, strict=True):
        parts.append(b"[%s,%s,%s]" % (encode_string(contract), encode_string(key), b"null" if blob is None else blob))
    return sha256(prev_root + b"[" + b",".join(parts) + b"]").digest()


def plain_receipt_json(height: int, index: int, tx_id: str) -> bytes:
    """Canonical JSON of a committed transaction's receipt with no result, error or events."""
    return b'{"error":null,"events":[],"height":%d,"index":%d,"result":null,"status":"committed","tx_id":"%s"}' % (
        height,
        index,
        tx_id.encode("ascii"),
    )


def make_receipt(
    tx_id: str,
    height: int,
    index: int,
    *,
    status: str = "committed",
    result: Any = None,
    error: str | None = None,
    events: list | None = None,
) -> dict[str, Any]:
    """A receipt of a transaction in a block (docs/ledger-protocol.md "Receipt"); by
    default the plain committed one."""
    return {
        "tx_id": tx_id,
        "status": status,
        "result": result,
        "error": error,
        "height": height,
        "index": index,
        "events": [] if events is None else events,
    }


def pair_key(signer: str, nonce: str) -> str:
    """One text key per (signer, nonce): user names never hold a newline."""
    return f"{signer}\n{nonce}"


class StateError(RuntimeError):
    """The state database cannot be opened or written."""


class State:
    """Per-contract key-value state plus the indexes the node answers from, in SQLite."""

    def __init__(self, path: str, *, cache_bytes: int = 2 << 20, cache_kib: int = 4096) -> None:
        self.path = path
        self.cache_bytes = cache_bytes
        self._cache_kib = cache_kib
        self._lock = threading.RLock()
        self._cache: OrderedDict[tuple[str, str], tuple[Any, int]] = OrderedDict()
        self._cached = 0
        self._in_tx = False  # an SQLite transaction holds applied blocks not committed yet
        self.uncommitted = 0  # blocks in it
        self._db = self._connect()
        self._load_meta()

    def _connect(self) -> sqlite3.Connection:
        try:
            fresh = not os.path.exists(self.path)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if fresh:
                os.chmod(self.path, 0o600)
            db.execute("PRAGMA journal_mode=WAL")
            # The blocks file is the durable record; a commit lost to a power cut is re-applied.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA cache_size=-{int(self._cache_kib)}")
            db.execute("PRAGMA mmap_size=0")
            db.execute("PRAGMA temp_store=FILE")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT format FROM meta WHERE id = 1").fetchone()
            if row is not None and row[0] != FORMAT:
                db.close()
                self._remove_files()
                return self._connect()
            return db
        except sqlite3.Error as exc:
            raise StateError(f"cannot open {self.path}: {exc}") from exc

    def _load_meta(self) -> None:
        row = self._db.execute(
            "SELECT height, head_hash, last_ts, root, committed, failed FROM meta WHERE id = 1"
        ).fetchone()
        if row is None:
            row = (0, "0" * 64, 0, ZERO_ROOT, 0, 0)
        self.height, self.head_hash, self.last_ts, self.root, self.committed, self.failed = row
        self.root = bytes(self.root)

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(self.path + suffix)
            except FileNotFoundError:
                pass

    def reset(self) -> None:
        """Forget everything (the state is rebuilt from the blocks file)."""
        with self._lock:
            if self._in_tx:
                self._db.execute("ROLLBACK")
                self._in_tx = False
                self.uncommitted = 0
            self._db.close()
            self._remove_files()
            self._cache.clear()
            self._cached = 0
            self._db = self._connect()
            self._load_meta()

    def close(self) -> None:
        with self._lock:
            self.commit()
            self._db.close()

    def commit(self) -> None:
        """Commit the blocks applied so far (a no-op when there are none)."""
        with self._lock:
            if not self._in_tx:
                return
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._in_tx = False
                raise StateError(f"writing {self.path} failed: {exc}") from exc
            self._in_tx = False
            self.uncommitted = 0

    def shrink(self) -> None:
        """Give SQLite's page cache back (an idle node)."""
        with self._lock:
            self.commit()
            self._db.execute("PRAGMA shrink_memory")

    # Values, with a bounded cache of parsed values (absent keys included).

    def get(self, contract: str, key: str) -> Any:
        """Value of ``key`` in ``contract``, None when absent."""
        ck = (contract, key)
        with self._lock:
            hit = self._cache.get(ck, _MISSING)
            if hit is not _MISSING:
                self._cache.move_to_end(ck)
                return hit[0]
            row = self._db.execute("SELECT value FROM kv WHERE contract = ? AND key = ?", ck).fetchone()
            value = None if row is None else loads(row[0])
            self._remember(ck, value, 0 if row is None else len(row[0]))
            return value

    def _remember(self, ck: tuple[str, str], value: Any, size: int) -> None:
        # Caller holds the lock.
        cost = size + len(ck[0]) + len(ck[1]) + _ENTRY_OVERHEAD
        old = self._cache.pop(ck, None)
        if old is not None:
            self._cached -= old[1]
        if cost > self.cache_bytes // 8:
            return  # a big value is read from disk each time rather than evicting the hot keys
        self._cache[ck] = (value, cost)
        self._cached += cost
        while self._cached > self.cache_bytes:
            _, (_, evicted) = self._cache.popitem(last=False)
            self._cached -= evicted

    def keys(self, contract: str) -> list[str]:
        """Every key of ``contract``, sorted."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT key FROM kv WHERE contract = ? ORDER BY key", (contract,))]

    def dump(self) -> dict[str, dict[str, Any]]:
        """All contract state as ``{contract: {key: value}}`` (tests and tools; reads it all)."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for contract, key, value in self._db.execute("SELECT contract, key, value FROM kv ORDER BY contract, key"):
                out.setdefault(contract, {})[key] = loads(value)
        return out

    # Transactions: nonces, receipts, where each sits in the blocks file.

    def used_pairs(self, pairs: Iterable[str]) -> set[str]:
        """Those of the ``pair_key`` values already used in the chain."""
        pairs = list(pairs)
        found: set[str] = set()
        with self._lock:
            for i in range(0, len(pairs), 500):
                chunk = pairs[i : i + 500]
                sql = f"SELECT pair FROM txs WHERE pair IN ({','.join('?' * len(chunk))})"  # noqa: S608 - placeholders only
                found.update(r[0] for r in self._db.execute(sql, chunk))
        return found

    def known_txs(self, tx_ids: Iterable[str]) -> set[str]:
        """Those of ``tx_ids`` already in the chain."""
        raw = [bytes.fromhex(t) for t in tx_ids]
        found: set[str] = set()
        with self._lock:
            for i in range(0, len(raw), 500):
                chunk = raw[i : i + 500]
                sql = f"SELECT tx_id FROM txs WHERE tx_id IN ({','.join('?' * len(chunk))})"  # noqa: S608 - placeholders only
                found.update(bytes(r[0]).hex() for r in self._db.execute(sql, chunk))
        return found

    def has_pair(self, pair: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM txs WHERE pair = ?", (pair,)).fetchone() is not None

    def has_tx(self, tx_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM txs WHERE tx_id = ?", (bytes.fromhex(tx_id),)).fetchone() is not None

    def receipt(self, tx_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT receipt, height, idx FROM txs WHERE tx_id = ?", (bytes.fromhex(tx_id),)
            ).fetchone()
        if row is None:
            return None
        return make_receipt(tx_id, row[1], row[2]) if row[0] is None else loads(row[0])

    def stored_receipts(self, tx_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The receipts stored with a body (a result, an error or events) among ``tx_ids``;
        a plain committed receipt has no events, so it is not looked at (``GET /events``)."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(tx_ids), 500):  # well under SQLite's bound on ? parameters
            chunk = [bytes.fromhex(t) for t in tx_ids[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT tx_id, receipt FROM txs WHERE tx_id IN ({marks}) AND receipt IS NOT NULL",  # noqa: S608
                    chunk,
                ).fetchall()
            for tx_id, receipt in rows:
                found[bytes(tx_id).hex()] = loads(receipt)
        return found

    def tx_location(self, tx_id: str) -> tuple[bytes, int, int] | None:
        """(receipt JSON, offset, length) of the envelope's bytes in the blocks file."""
        with self._lock:
            row = self._db.execute(
                "SELECT receipt, off, len, height, idx FROM txs WHERE tx_id = ?", (bytes.fromhex(tx_id),)
            ).fetchone()
        if row is None:
            return None
        receipt = plain_receipt_json(row[3], row[4], tx_id) if row[0] is None else bytes(row[0])
        return receipt, row[1], row[2]

    def all_receipts(self) -> dict[str, dict[str, Any]]:
        """Every receipt by tx_id (tests and tools; reads them all)."""
        with self._lock:
            rows = self._db.execute("SELECT tx_id, receipt, height, idx FROM txs")
            return {
                bytes(t).hex(): make_receipt(bytes(t).hex(), h, i) if r is None else loads(r) for t, r, h, i in rows
            }

    def history(self, contract: str, key: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT height, tx_id, value FROM history WHERE contract = ? AND key = ? ORDER BY height, idx",
                (contract, key),
            ).fetchall()
        return [{"height": h, "tx_id": t, "value": None if v is None else loads(v)} for h, t, v in rows]

    # Blocks.

    def block_location(self, height: int) -> tuple[str, int, int] | None:
        """(hash, offset, length) of block ``height``'s line in the blocks file."""
        with self._lock:
            return self._db.execute("SELECT hash, off, len FROM blocks WHERE height = ?", (height,)).fetchone()

    # The one write.

    def apply(
        self,
        *,
        height: int,
        head_hash: str,
        last_ts: int,
        block_at: tuple[int, int],
        writes: list[list[Any]],
        blobs: list[bytes | None],
        history: list[tuple[int, str]],
        txs: list[tuple[bytes, str, int, int, bytes | None]],
        committed: int,
        failed: int,
        root: bytes,
        commit: bool = True,
    ) -> None:
        """Write one block's effects; ``commit`` ends the SQLite transaction (else the
        next block joins it: call :meth:`commit` soon).

        ``blobs``: canonical bytes of each write's value (None: delete); ``history``:
        (index in writes, tx_id) of the writes whose history is kept; ``txs``: (raw
        tx_id, pair_key, offset, length, canonical receipt or None for a plain one) per
        transaction.
        """
        upserts: dict[tuple[str, str], tuple[Any, bytes]] = {}  # the block's last write of each key
        deletes: set[tuple[str, str]] = set()
        for (contract, key, value), blob in zip(writes, blobs, strict=True):
            ck = (contract, key)
            if blob is None:
                upserts.pop(ck, None)
                deletes.add(ck)
            else:
                deletes.discard(ck)
                upserts[ck] = (value, blob)
        with self._lock:
            db = self._db
            try:
                if not self._in_tx:
                    db.execute("BEGIN")
                    self._in_tx = True
                if deletes:
                    db.executemany("DELETE FROM kv WHERE contract = ? AND key = ?", deletes)
                if upserts:
                    db.executemany(
                        "INSERT OR REPLACE INTO kv (contract, key, value) VALUES (?, ?, ?)",
                        [(c, k, blob) for (c, k), (_, blob) in upserts.items()],
                    )
                if history:
                    db.executemany(
                        "INSERT INTO history (contract, key, height, idx, tx_id, value) VALUES (?, ?, ?, ?, ?, ?)",
                        [(writes[i][0], writes[i][1], height, i, tx_id, blobs[i]) for i, tx_id in history],
                    )
                db.executemany(
                    "INSERT INTO txs (tx_id, pair, height, idx, off, len, receipt) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(t[0], t[1], height, i, t[2], t[3], t[4]) for i, t in enumerate(txs)],
                )
                db.execute(
                    "INSERT INTO blocks (height, hash, off, len) VALUES (?, ?, ?, ?)", (height, head_hash, *block_at)
                )
                db.execute(
                    "INSERT OR REPLACE INTO meta (id, format, height, head_hash, last_ts, root, committed, failed) "
                    "VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                    (FORMAT, height, head_hash, last_ts, root, self.committed + committed, self.failed + failed),
                )
                self.uncommitted += 1
                if commit:
                    db.execute("COMMIT")
                    self._in_tx = False
                    self.uncommitted = 0
            except BaseException as exc:
                # Blocks applied earlier in this transaction are rolled back too: the
                # state is now behind the core, which stops serving (a restart re-applies).
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                self._in_tx = False
                self.uncommitted = 0
                # The cache may hold nothing the database does not: drop it.
                self._cache.clear()
                self._cached = 0
                if isinstance(exc, sqlite3.Error):
                    raise StateError(f"writing {self.path} failed: {exc}") from exc
                raise
            for ck in deletes:
                self._remember(ck, None, 0)
            for ck, (value, blob) in upserts.items():
                self._remember(ck, value, len(blob))
            self.height, self.head_hash, self.last_ts, self.root = height, head_hash, last_ts, root
            self.committed += committed
            self.failed += failed

"""Durable storage: an append-only JSON-lines write-ahead log in the data directory.

Each line is one record, ``{"seq": n, ...}`` in compact canonical JSON (sorted keys,
UTF-8). A record is written with a single ``write`` and made durable with ``fsync``
before :meth:`WriteAheadLog.append` returns, so anything acknowledged to a client
survives a crash. On open the log is replayed; invalid records at the *tail* (a torn
write from a crash) are dropped and cut off, but an invalid record followed by valid
ones is corruption and the node refuses to start rather than lose acknowledged data.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

WAL_NAME = "wal.jsonl"


class StoreError(RuntimeError):
    """The log cannot be opened, is corrupt, or a write failed."""


def encode(record: dict[str, Any]) -> bytes:
    """Canonical JSON for a record: sorted keys, no spaces, UTF-8, one line."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def _decode(line: bytes) -> dict[str, Any] | None:
    """The record on ``line`` (without its newline), or None when it is not one."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        return None
    return record


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriteAheadLog:
    """The node's append-only log; thread-safe, one writer process per data dir."""

    def __init__(self, data_dir: str, *, warn: Callable[[str], None] | None = None) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, WAL_NAME)
        self._warn = warn or (lambda msg: print(f"bsn-ledger: {msg}", file=sys.stderr))
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self.seq = 0
        self.failed: str | None = None

    # Opening and replay.

    def open(self, apply: Callable[[dict[str, Any]], None]) -> int:
        """Open (creating if needed) and replay the log into ``apply``; returns records replayed."""
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            created = not os.path.exists(self.path)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(f"{self.path} is locked by another running node") from None
        self._fd = fd
        if created:
            _fsync_dir(self.data_dir)
        try:
            count = self._replay(apply)
        except BaseException:
            self.close()
            raise
        return count

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        """(offset, line) pairs; a last line without its newline is yielded as-is."""
        with open(self.path, "rb") as f:
            offset = 0
            for line in f:
                yield offset, line
                offset += len(line)

    def _replay(self, apply: Callable[[dict[str, Any]], None]) -> int:
        good_end = 0  # offset just past the last valid record
        bad_at: int | None = None  # offset of the first invalid line seen after good_end
        count = 0
        for offset, line in self._lines():
            record = _decode(line[:-1]) if line.endswith(b"\n") else None
            if record is None:
                if bad_at is None:
                    bad_at = offset
                continue
            if bad_at is not None:
                raise StoreError(
                    f"{self.path} is corrupt at byte {bad_at}: an invalid record is followed by "
                    f"valid ones; refusing to start (move the file aside to inspect it)"
                )
            if record["seq"] != self.seq + 1:
                # Whole records out of order are not a torn write: something rewrote the log.
                raise StoreError(
                    f"{self.path} is corrupt at byte {offset}: expected seq {self.seq + 1}, found "
                    f"{record['seq']}; refusing to start (move the file aside to inspect it)"
                )
            apply(record)
            self.seq = record["seq"]
            good_end = offset + len(line)
            count += 1
        size = os.fstat(self._fd).st_size
        if good_end < size:
            # A crash mid-write leaves a partial (or zero-filled) tail: never acknowledged.
            self._warn(f"dropping {size - good_end} bytes of torn records at the end of {self.path}")
            os.ftruncate(self._fd, good_end)
            os.fsync(self._fd)
        self._size = good_end
        return count

    # Writing.

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Durably log ``record`` (``seq`` is assigned here) and return it."""
        with self._lock:
            if self._fd is None:
                raise StoreError("log is closed")
            if self.failed:
                raise StoreError(self.failed)
            full = {**record, "seq": self.seq + 1}
            data = encode(full) + b"\n"
            try:
                written = os.write(self._fd, data)
                if written != len(data):
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
                os.fsync(self._fd)
            except OSError as exc:
                self._undo(exc)
                raise StoreError(f"write to {self.path} failed: {exc}") from exc
            self._size += len(data)
            self.seq = full["seq"]
            return full

    def _undo(self, exc: OSError) -> None:
        # Cut off whatever part of the record reached the file, so the log stays valid.
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        except OSError as again:
            self.failed = f"log is in an unknown state after a failed write ({exc}; then {again})"

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # also releases the flock
                self._fd = None

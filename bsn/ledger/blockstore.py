"""The blocks file: append-only, one canonical JSON block per line, fsync per block.

``$BSN_LEDGER_DATA/blocks.jsonl`` is ``flock``ed while a node runs, so two nodes never
share a data directory. On open the lines are handed to a callback in order; bytes that
do not form a complete line at the *end* (a write torn by a crash, never acknowledged)
are cut off with a warning, while an unreadable line followed by readable ones is
corruption and the node refuses to start. Blocks and transactions are read back with
``pread`` at offsets the state database keeps (nothing per block stays in memory).
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from bsn.ledger.canonical import loads

BLOCKS_NAME = "blocks.jsonl"


class StoreError(RuntimeError):
    """The blocks file cannot be opened, is corrupt, or a write failed."""


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlockStore:
    """Thread-safe append-only block lines; one writer process per data directory."""

    def __init__(self, data_dir: str, *, warn: Callable[[str], None] | None = None) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, BLOCKS_NAME)
        self._warn = warn or (lambda msg: print(f"bsn-ledger: {msg}", file=sys.stderr, flush=True))
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.count = 0  # block lines replayed or appended
        self.size = 0
        self.failed: str | None = None

    def open(self, replay: Callable[[bytes, Any, int], None]) -> int:
        """:meth:`lock` then :meth:`replay`; returns the number of blocks replayed."""
        self.lock()
        try:
            self.replay(replay)
        except BaseException:
            self.close()
            raise
        return self.count

    def lock(self) -> None:
        """Open (creating if needed) and ``flock`` the blocks file."""
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

    def replay(self, replay: Callable[[bytes, Any, int], None]) -> None:
        """Hand every stored block line to ``replay(line, parsed_block, offset)``, which
        raises to refuse the chain; cut off a torn tail."""
        self.count = 0
        self._replay(replay)

    def _replay(self, replay: Callable[[bytes, Any, int], None]) -> None:
        good_end = 0  # offset just past the last good block line
        bad_at: int | None = None  # first unreadable line after good_end
        with open(self.path, "rb") as f:
            offset = 0
            for line in f:
                block = None
                if line.endswith(b"\n"):
                    try:
                        block = loads(line[:-1])
                    except (ValueError, RecursionError):
                        block = None
                if not isinstance(block, dict):
                    if bad_at is None:
                        bad_at = offset
                    offset += len(line)
                    continue
                if bad_at is not None:
                    raise StoreError(
                        f"{self.path} is corrupt at byte {bad_at}: an unreadable line is followed by "
                        f"blocks; refusing to start (move the file aside to inspect it)"
                    )
                replay(line[:-1], block, offset)  # raises to refuse the chain
                self.count += 1
                offset += len(line)
                good_end = offset
        size = os.fstat(self._fd).st_size
        if good_end < size:
            # A crash mid-write leaves a partial (or zero-filled) tail: never acknowledged.
            self._warn(f"dropping {size - good_end} bytes of a torn block at the end of {self.path}")
            os.ftruncate(self._fd, good_end)
            os.fsync(self._fd)
        self.size = good_end

    def append(self, line: bytes) -> int:
        """Durably append one block line (no newline inside); fsync before returning.

        Returns the line's offset in the file."""
        with self._lock:
            if self._fd is None:
                raise StoreError("blocks file is closed")
            if self.failed:
                raise StoreError(self.failed)
            data = line + b"\n"
            try:
                written = os.write(self._fd, data)
                if written != len(data):
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
                os.fsync(self._fd)
            except OSError as exc:
                self._undo(exc)
                raise StoreError(f"write to {self.path} failed: {exc}") from exc
            offset = self.size
            self.count += 1
            self.size += len(data)
            return offset

    def _undo(self, exc: OSError) -> None:
        try:
            os.ftruncate(self._fd, self.size)
            os.fsync(self._fd)
        except OSError as again:
            self.failed = f"blocks file is in an unknown state after a failed write ({exc}; then {again})"

    def read_at(self, offset: int, length: int) -> bytes | None:
        """``length`` bytes at ``offset`` (a block line or a transaction in one), or None."""
        fd = self._fd
        if fd is None or offset + length > self.size:
            return None
        return os.pread(fd, length, offset)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # also releases the flock
                self._fd = None

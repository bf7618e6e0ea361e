"""Solo ordering: this node cuts and commits every block itself (process driver, dev).

A thread collects submitted envelopes and cuts a block when ``BSN_BLOCK_MAX_TXS`` are
waiting (or 4 MiB of envelopes) or ``BSN_BLOCK_MAX_WAIT_MS`` passed since the oldest arrived, then commits it
with ``core.make_block`` + ``core.apply_committed``. Submissions live in memory only:
a client is answered after its block is durable, so a crash loses only unacknowledged
transactions (which the client retries; the nonce prevents a double apply).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from bsn.ledger.ordering import OrderingUnavailable
from bsn.ledger.tx import now_ms

MAX_BLOCK_BYTES = 4 * 1024 * 1024  # of envelopes in one block, as the etcd orderer cuts

if TYPE_CHECKING:
    from bsn.ledger.chain import LedgerCore
    from bsn.ledger.config import Config


class SoloOrderer:
    mode = "solo"

    def __init__(self, config: Config) -> None:
        self.node_id = config.node_id
        self.max_txs = config.block_max_txs
        self.max_wait = config.block_max_wait_ms / 1000
        self._queue: deque[dict] = deque()
        self._first_at = 0.0  # when the oldest waiting envelope arrived
        self._cond = threading.Condition()
        self._stopping = False
        self._failed: str | None = None
        self._thread: threading.Thread | None = None
        self._core: LedgerCore | None = None

    def start(self, core: LedgerCore) -> None:
        self._core = core
        self._thread = threading.Thread(target=self._run, name="solo-orderer", daemon=True)
        self._thread.start()

    def submit(self, envelopes: list[dict]) -> None:
        with self._cond:
            if self._stopping or self._thread is None:
                raise OrderingUnavailable("the orderer is not running")
            if self._failed:
                raise OrderingUnavailable(self._failed)
            if not self._queue:
                self._first_at = time.monotonic()
            self._queue.extend(envelopes)
            self._cond.notify()

    def stop(self) -> None:
        """Stop taking submissions, commit what is queued, end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def catch_up(self, timeout: float) -> bool:
        return False  # one node: what it committed, it has applied

    def status(self) -> dict:
        return {"mode": self.mode, "proposer": self.node_id, "is_proposer": True, "lag_blocks": 0}

    def _next_batch(self) -> list[dict] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            while len(self._queue) < self.max_txs and not self._stopping:
                left = self._first_at + self.max_wait - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            queue = self._queue
            batch = []
            size = 0
            while queue and len(batch) < self.max_txs:
                prepared = getattr(queue[0], "prepared", None)
                size += len(prepared.leaf) if prepared is not None else 0
                if batch and size > MAX_BLOCK_BYTES:
                    break
                batch.append(queue.popleft())
            if queue:
                self._first_at = time.monotonic()
            return batch

    def _run(self) -> None:
        core = self._core
        assert core is not None
        while (batch := self._next_batch()) is not None:
            try:
                block = core.make_block(batch, now_ms())
                if block["header"]["tx_count"]:
                    core.apply_committed(block)
            except Exception as exc:  # noqa: BLE001 - storage failure or a bug: stop ordering, report it
                with self._cond:
                    self._failed = f"ordering stopped: {exc}"
                    self._queue.clear()
                print(f"bsn-ledger: {self._failed}", file=sys.stderr, flush=True)
                core.fail(self._failed)
                return

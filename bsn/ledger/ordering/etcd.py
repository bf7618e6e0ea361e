"""Ordering through the platform's etcd cluster (docs/ledger-protocol.md, "Ordering with etcd").

etcd (Raft) decides the order; this module only follows the protocol page:

- ``submit`` puts each submitted batch as one key ``P/pending/<batch id>`` (a JSON array
  of signed envelopes, at most ``BSN_BLOCK_MAX_TXS`` of them) and returns; the node
  acknowledges a submission only once its block is applied. The node keeps its own
  batches (already parsed and verified) in memory and caches the raw values of other
  nodes' batches from the watch, so the proposer normally lists pending keys only.
- The proposer does not write what it receives itself to ``P/pending``: it orders it
  from memory, after the batches other nodes wrote, and acknowledges it once the block
  is committed, so a crash loses only what was never acknowledged (as with solo
  ordering). If it stops proposing first, it writes them to ``P/pending`` for the next
  proposer (retrying until etcd takes them).
- Election: a lease (TTL 3 s, kept alive every second) and
  ``create_revision(P/proposer) == 0 → put(P/proposer, me, lease)``. A keep-alive that
  fails, or a lease whose deadline passed, stops proposing at once. The first campaign
  after start waits ``BSN_ETCD_CAMPAIGN_DELAY_MS`` (the node's rank among the app's nodes
  times a stagger): nodes that start together do not all grant leases and lose the txn.
- Take-over: etcd leases are outside its RBAC, so any client (another app's credential)
  can keep a dead proposer's lease alive. Failover therefore does not rest on the lease
  alone: a node that sees pending batches older than ``BSN_ETCD_TAKEOVER_S`` while no
  block was committed for as long deletes ``P/proposer`` (compare: its mod revision is
  the one it saw) and campaigns. A proposer that sees its key deleted or taken stops.
- The proposer catches up to ``P/height``, then loops: list ``P/pending/`` (oldest
  first, keys only), take whole batches up to a block, ``core.make_block``, and commits
  with one transaction comparing
  ``value(P/height) == h`` (and that ``P/proposer`` is still held by its lease, so a
  deposed proposer cannot commit even before it notices). A failed compare means
  someone else moved the chain: re-sync and go on.
- Every node watches ``P`` from its own height: blocks are applied in height order
  (``core.apply_committed`` verifies and is idempotent), pending puts wake the
  proposer, a deleted ``P/proposer`` wakes the election. Before the watch (re)starts,
  one read-only transaction reads the blocks above the node's height, ``P/height``, the
  pending keys and ``P/proposer`` at one revision, and the watch starts after it; blocks
  older than the window come from peers' ``GET /blocks/{h}``.

No Django here: this runs inside ledger node containers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping
from typing import Any

from bsn.ledger import auth
from bsn.ledger.canonical import canonical, loads
from bsn.ledger.etcd_http import (
    EtcdAuthError,
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    compare,
    op_delete,
    op_put,
    op_range,
    prefix_end,
)
from bsn.ledger.ordering import OrderingUnavailable

logger = logging.getLogger(__name__)

LEASE_TTL = 3  # seconds (protocol page)
KEEPALIVE_INTERVAL = 1.0
HEIGHT_DIGITS = 20
# One etcd request is at most --max-request-bytes (the members run with 8 MiB); keep a
# block's transaction well below it, and a submit's ops below --max-txn-ops (1024).
MAX_BLOCK_BYTES = 4 * 1024 * 1024
MAX_BATCH_BYTES = 1024 * 1024  # one pending batch; a block takes whole batches
MAX_TXN_BYTES = 4 * 1024 * 1024  # values per submit txn (base64 on the wire: x4/3)
MAX_TXN_OPS = 1000
WATCH_READ_TIMEOUT = 5.0  # idle watches are re-opened (cheap) so a dead member is noticed
CATCH_UP_PAGE = 64  # blocks per read while catching up
IDLE_POLL = 1.0  # the proposer re-reads pending at least this often even without events
TAKEOVER_AFTER = 10.0  # seconds of pending work without a block before the proposer is deposed


def _envelope_bytes(envelope: Mapping[str, Any]) -> bytes:
    """canonical(envelope): the prepared form's leaf bytes when the core made one."""
    prepared = getattr(envelope, "prepared", None)
    leaf = getattr(prepared, "leaf", None)
    return leaf if isinstance(leaf, bytes) else canonical(envelope)


def _block_bytes(block: Mapping[str, Any]) -> bytes:
    """The block's canonical JSON: the line the core already serialised, when it made one."""
    line = getattr(getattr(block, "checked", None), "line", None)
    return line if isinstance(line, bytes) else canonical(block)


def _txn_groups(batches: list[tuple[str, bytes, list[dict]]]) -> list[list[tuple[str, bytes, list[dict]]]]:
    """Split puts so that one etcd request stays under MAX_TXN_OPS and MAX_TXN_BYTES."""
    groups: list[list[tuple[str, bytes, list[dict]]]] = [[]]
    size = 0
    for batch in batches:
        if groups[-1] and (len(groups[-1]) >= MAX_TXN_OPS or size + len(batch[1]) > MAX_TXN_BYTES):
            groups.append([])
            size = 0
        groups[-1].append(batch)
        size += len(batch[1])
    return groups


def _cfg(config: Any, name: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(name, default)
    return getattr(config, name, default)


class EtcdOrderer:
    """The Orderer for BSN_ORDERING=etcd. Thread-based; all core calls are serialised."""

    mode = "etcd"

    def __init__(self, config: Any, *, client: EtcdClient | None = None) -> None:
        self.node_id = str(_cfg(config, "node_id"))
        prefix = str(_cfg(config, "etcd_prefix") or "")
        if not prefix.endswith("/"):
            prefix += "/"
        self.prefix = prefix
        self.k_proposer = f"{prefix}proposer"
        self.k_height = f"{prefix}height"
        self.k_pending = f"{prefix}pending/"
        self.k_blocks = f"{prefix}blocks/"
        self.max_txs = max(1, int(_cfg(config, "block_max_txs", 500) or 500))
        self.max_wait = max(0, int(_cfg(config, "block_max_wait_ms", 20) or 0)) / 1000.0
        self.window = max(1, int(_cfg(config, "etcd_block_window", 10000) or 10000))
        self.takeover_after = max(1.0, float(_cfg(config, "etcd_takeover_s", TAKEOVER_AFTER) or TAKEOVER_AFTER))
        self.campaign_delay = max(0, int(_cfg(config, "etcd_campaign_delay_ms", 0) or 0)) / 1000.0
        self.peers = [p.rstrip("/") for p in (_cfg(config, "peers") or []) if p]
        self.peer_credentials: dict[str, str] = dict(_cfg(config, "peer_credentials") or {})
        endpoints = _cfg(config, "etcd_endpoints") or []
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        self.client = client or EtcdClient(
            endpoints,
            user=_cfg(config, "etcd_user") or None,
            password=_cfg(config, "etcd_password") or "",
            token=_cfg(config, "etcd_token") or None,
            timeout=float(_cfg(config, "etcd_timeout", 3.0) or 3.0),
        )
        self.core: Any = None
        self._core_lock = threading.RLock()
        self._stop = threading.Event()
        self._wake_proposer = threading.Event()
        self._wake_election = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch: Any = None
        self._lease: int = 0
        self._lease_deadline = 0.0  # monotonic time the lease surely still lives until
        self._lease_revision = 0  # etcd revision of our put of P/proposer
        self._proposer_seen: str | None = None
        self._committed_height = 0  # highest P/height observed
        self._need_sync = True  # read P/height before the next proposal
        # Pending batches by key: this node's own (envelopes as submitted, already
        # prechecked) and other nodes' raw values seen on the watch.
        self._mine: dict[str, tuple[list[dict], int]] = {}
        self._seen: dict[str, bytes] = {}
        # Submissions received while proposing, ordered from memory (never in P/pending
        # unless this node stops proposing before they are in a block).
        self._local: deque[dict] = deque()
        self._local_lock = threading.Lock()
        # Liveness of the proposer, judged by progress and not by its lease (take-over):
        # when each pending batch was first seen here, and the last time the chain moved.
        self._pending_since: dict[str, float] = {}
        self._progress_at = time.monotonic()
        self._progress_height = 0
        self.last_error = ""

    # ------------------------------------------------------------------ interface

    def start(self, core: Any) -> None:
        self.core = core
        self._committed_height = int(core.height)
        self._progress_height = int(core.height)
        self._progress_at = time.monotonic()
        for name, target in (("watch", self._watch_loop), ("elect", self._elect_loop), ("propose", self._propose_loop)):
            thread = threading.Thread(target=target, name=f"etcd-{name}-{self.node_id[:8]}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, envelopes: list[dict]) -> None:
        """Hand envelopes to ordering: the proposer keeps them for its next block, any
        other node puts them durably in P/pending/<batch id>; raise OrderingUnavailable
        if neither is possible."""
        if not envelopes:
            return
        with self._local_lock:  # the propose loop moves _local to P/pending under this lock
            if self.is_proposer and not self._stop.is_set():
                self._local.extend(envelopes)
                self._wake_proposer.set()
                return
        self._put_pending(envelopes)

    def _put_pending(self, envelopes: list[dict]) -> None:
        """Put envelopes in P/pending/ as batches; raise OrderingUnavailable if etcd does not take them."""
        batches = self._batches(envelopes)
        for key, value, chunk in batches:
            self._mine[key] = (chunk, len(value))  # before the put: the proposer may see it at once
        try:
            for group in _txn_groups(batches):  # one submit is one txn unless enormous
                self.client.txn([], [op_put(key, value) for key, value, _ in group])
        except EtcdError as exc:
            for key, _, _ in batches:
                self._mine.pop(key, None)  # if the put landed after all, the proposer reads it from etcd
            self.last_error = str(exc)
            raise OrderingUnavailable(f"ordering service unavailable: {exc}") from None
        now = time.monotonic()
        for key, _, _ in batches:
            self._pending_since.setdefault(key, now)
        self._wake_proposer.set()

    def _batches(self, envelopes: list[dict]) -> list[tuple[str, bytes, list[dict]]]:
        """(key, value, envelopes) per pending batch: at most max_txs envelopes and
        MAX_BATCH_BYTES each; keys sort in submission order within one etcd revision."""
        token = f"{self.node_id}.{os.urandom(8).hex()}"
        out: list[tuple[str, bytes, list[dict]]] = []
        chunk: list[dict] = []
        parts: list[bytes] = []
        size = 0
        for env in envelopes:
            raw = _envelope_bytes(env)
            if chunk and (len(chunk) >= self.max_txs or size + len(raw) > MAX_BATCH_BYTES):
                out.append((f"{self.k_pending}{token}.{len(out):06d}", b"[" + b",".join(parts) + b"]", chunk))
                chunk, parts, size = [], [], 0
            chunk.append(env)
            parts.append(raw)
            size += len(raw) + 1
        out.append((f"{self.k_pending}{token}.{len(out):06d}", b"[" + b",".join(parts) + b"]", chunk))
        return out

    def stop(self) -> None:
        self._stop.set()
        self._wake_proposer.set()
        self._wake_election.set()
        self._hand_over_local()  # best effort: the next proposer orders them
        watch = self._watch
        if watch is not None:
            watch.close()
        lease, self._lease = self._lease, 0
        self._lease_deadline = 0.0
        if lease:
            # Hand over at once instead of after the TTL. The key is deleted first: a
            # revoke fails when someone attached a key of theirs to our lease (a revoke
            # needs write permission on every attached key).
            try:
                self.client.txn([compare(self.k_proposer, "LEASE", "==", lease)], [op_delete(self.k_proposer)])
                self.client.lease_revoke(lease)
            except EtcdError as exc:
                logger.info("could not revoke proposer lease: %s", exc)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        self.client.close()

    def catch_up(self, timeout: float) -> bool:
        """Read P/height (a linearizable read: every block committed before this call is
        counted) and wait until the watch has applied up to it. Asked only when a
        transaction names a signer this node does not know: the user may have been
        registered in a block another node confirmed a moment ago."""
        core = self.core
        before = int(core.height)
        try:
            committed = self._read_height()
        except EtcdError as exc:
            self._note(f"catch-up: {exc}")
            return False
        deadline = time.monotonic() + timeout
        while int(core.height) < committed and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._stop.wait(min(0.01, left))  # the watch applies; this only waits for it
        return int(core.height) > before

    def status(self) -> dict:
        height = int(self.core.height) if self.core is not None else 0
        return {
            "mode": self.mode,
            "proposer": self._proposer_seen,
            "is_proposer": self.is_proposer,
            "lag_blocks": max(0, self._committed_height - height),
        }

    @property
    def is_proposer(self) -> bool:
        return bool(self._lease) and time.monotonic() < self._lease_deadline

    # ------------------------------------------------------------------ applying

    def _block_key(self, height: int) -> str:
        return f"{self.k_blocks}{height:0{HEIGHT_DIGITS}d}"

    def _height_of(self, key: bytes) -> int | None:
        tail = key.decode("utf-8", "replace")[len(self.k_blocks) :]
        return int(tail) if tail.isdigit() else None

    def _apply(self, height: int, block: dict) -> bool:
        """Apply block ``height`` if it is the next one; True if the core moved."""
        with self._core_lock:
            if height != int(self.core.height) + 1:
                return False
            self.core.apply_committed(block, parsed=True)  # from loads(), or made by the core
            moved = int(self.core.height) >= height
        if moved:
            self._committed_height = max(self._committed_height, height)
            self._note_progress(height)
        return moved

    def _note_progress(self, height: int | None = None) -> None:
        """The chain moved (a block, or pending batches cleared): the proposer is alive."""
        if height is None or height > self._progress_height:
            self._progress_at = time.monotonic()
            if height is not None:
                self._progress_height = height

    def _sync(self) -> int:
        """What the watch needs before it (re)starts, in one read-only transaction at one
        revision: the first page of blocks above this node's height, ``P/height``, the
        pending keys and ``P/proposer``. One linearizable read (a round of the etcd
        members) where a start used four. Applies the blocks (the rest page by page),
        forgets batches no longer pending, notes the proposer; the revision to watch after."""
        _, reply = self.client.txn(
            [],
            [
                op_range(self._block_key(int(self.core.height) + 1), prefix_end(self.k_blocks), limit=CATCH_UP_PAGE),
                op_range(self.k_height),
                op_range(self.k_pending, prefix_end(self.k_pending), keys_only=True),
                op_range(self.k_proposer),
            ],
        )
        kvs = EtcdClient.txn_range_kvs
        height, proposer = kvs(reply, 1), kvs(reply, 3)
        self._catch_up(kvs(reply, 0), self._note_height(height[0] if height else None))
        self._forget_settled({kv.key.decode("utf-8", "replace") for kv in kvs(reply, 2)})
        self._proposer_seen = proposer[0].value.decode("utf-8", "replace") if proposer else None
        return int((reply.get("header") or {}).get("revision") or 0)

    def _catch_up(self, page: list | None = None, committed: int | None = None) -> None:
        """Apply every committed block above the core's height. ``page``: the first blocks
        above it, read already together with ``committed`` (``P/height``), by ``_sync``."""
        while not self._stop.is_set():
            start = int(self.core.height) + 1
            if page is None:
                page = self.client.range(self._block_key(start), prefix_end(self.k_blocks), limit=CATCH_UP_PAGE).kvs
            kvs, page = page, None
            if not kvs:
                committed = self._read_height() if committed is None else committed
                if committed > int(self.core.height):
                    # Blocks we miss are older than the window (deleted): ask peers.
                    self._fetch_from_peers(start, committed)
                    committed = None
                    continue
                return
            committed = None  # read with the page: the next page is read afresh, with it
            for kv in kvs:
                height = self._height_of(kv.key)
                if height is None:
                    continue
                if height > int(self.core.height) + 1:
                    self._fetch_from_peers(int(self.core.height) + 1, height - 1)
                if not self._apply(height, loads(kv.value)):
                    if height > int(self.core.height):
                        raise EtcdError(f"block {height} from etcd did not apply at height {self.core.height}")

    def _read_height(self) -> int:
        return self._note_height(self.client.get(self.k_height))

    def _note_height(self, kv: KeyValue | None) -> int:
        """``P/height`` as read (None: no block yet), noted as committed."""
        height = int(kv.value) if kv else 0
        self._committed_height = max(self._committed_height, height)
        return height

    def _fetch_from_peers(self, first: int, last: int) -> None:
        fetched = 0
        for height in range(first, last + 1):
            if int(self.core.height) >= height:
                continue
            block = self._peer_block(height)
            if block is None:
                raise EtcdUnavailable(f"block {height} is beyond the etcd window and no peer served it")
            if not self._apply(height, block):
                raise EtcdError(f"block {height} from a peer did not apply")
            fetched += 1
        if fetched:
            logger.warning("caught up %d blocks (%d-%d) older than the etcd window from peers", fetched, first, last)

    def _peer_block(self, height: int) -> dict | None:
        for peer in self.peers:
            credential = self.peer_credentials.get(peer)
            if credential is None:
                logger.info("no credential for peer %s; skipped", peer)
                continue
            # Signed with the peer's own credential (docs/ledger-protocol.md "Node
            # authentication"); an answer without the peer's reply MAC is no answer.
            key = credential.encode("utf-8")
            target = f"/blocks/{height}"
            header, nonce = auth.authorization(key, "GET", target, b"")
            request = urllib.request.Request(f"{peer}{target}", headers={"Authorization": header})  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - http peers
                    raw = resp.read()
                    if not auth.check_reply(key, nonce, resp.status, raw, resp.headers.get(auth.REPLY_HEADER)):
                        logger.warning("peer %s answered without proving it is that peer; ignored", peer)
                        continue
                    return loads(raw)
            except (OSError, ValueError, urllib.error.URLError) as exc:
                logger.info("peer %s has no block %s: %s", peer, height, exc)
        return None

    def _watch_loop(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                revision = self._sync()
                self._wake_proposer.set()  # pending may have arrived while the watch was down
                watch = self.client.watch(
                    self.prefix, prefix=True, start_revision=revision + 1, read_timeout=WATCH_READ_TIMEOUT
                )
                self._watch = watch
                if self._stop.is_set():
                    break
                delay = 0.05
                with watch:
                    for events in watch:
                        self._on_events(events)
            except _Gap:
                continue  # range from our height
            except EtcdCompacted:
                continue
            except EtcdAuthError as exc:
                self.client.invalidate_token()
                self._note(f"watch: {exc}")
                self._stop.wait(delay)
            except EtcdUnavailable as exc:
                if "nothing within" not in str(exc):
                    self._note(f"watch: {exc}")
                    self._stop.wait(delay)
                    delay = min(delay * 2, 2.0)
            except Exception as exc:
                self._note(f"watch: {exc!r}")
                logger.exception("applying blocks from etcd failed")
                self._stop.wait(1.0)
            finally:
                self._watch = None

    def _on_events(self, events: list) -> None:
        for event in events:
            key = event.kv.key.decode("utf-8", "replace")
            if key.startswith(self.k_blocks):
                if event.type != "PUT":
                    continue  # window deletions
                height = self._height_of(event.kv.key)
                if height is None:
                    continue
                with self._core_lock:  # the proposer applies its own block under this lock
                    current = int(self.core.height)
                    if height <= current:
                        continue
                    if height > current + 1 or not self._apply(height, loads(event.kv.value)):
                        raise _Gap()
            elif key.startswith(self.k_pending):
                if event.type == "PUT":
                    if key not in self._mine:
                        self._seen[key] = event.kv.value
                    self._pending_since.setdefault(key, time.monotonic())
                    self._wake_proposer.set()
                else:
                    self._mine.pop(key, None)
                    self._seen.pop(key, None)
                    if self._pending_since.pop(key, None) is not None:
                        self._note_progress()
            elif key == self.k_proposer:
                if event.type == "DELETE":
                    self._proposer_seen = None
                    self._deposed(event.kv.mod_revision, "the proposer key was deleted")
                    self._wake_election.set()
                else:
                    holder = event.kv.value.decode("utf-8", "replace")
                    self._proposer_seen = holder
                    if holder != self.node_id or event.kv.lease != self._lease:
                        self._deposed(event.kv.mod_revision, f"{holder} holds the proposer key")
            elif key == self.k_height and event.type == "PUT":
                try:
                    self._committed_height = max(self._committed_height, int(event.kv.value))
                except ValueError:
                    pass

    # ------------------------------------------------------------------ election

    def _elect_loop(self) -> None:
        # The first campaign waits the node's delay (BSN_ETCD_CAMPAIGN_DELAY_MS, by its rank
        # among the app's nodes): an app's nodes starting at once would each grant a lease
        # and try the proposer txn, and all but one revoke theirs — writes on every member.
        # A later node then finds the proposer with one read. Only the first campaign after
        # start waits: failover (the watch sees the key deleted) campaigns at once.
        if self.campaign_delay and self._stop.wait(self.campaign_delay):
            return
        while not self._stop.is_set():
            try:
                if self._lease:
                    self._keep_alive()
                    self._stop.wait(KEEPALIVE_INTERVAL)
                else:
                    self._campaign()
                    if not self._lease and self._take_over():
                        self._campaign()
                    if not self._lease:
                        self._wake_election.wait(IDLE_POLL)
                        self._wake_election.clear()
            except EtcdError as exc:
                self._note(f"election: {exc}")
                if self._lease and time.monotonic() >= self._lease_deadline:
                    self._resign("lease deadline passed without a keep-alive")
                self._stop.wait(0.2)

    def _campaign(self) -> None:
        current = self.client.get(self.k_proposer)
        if current is not None:
            self._proposer_seen = current.value.decode("utf-8", "replace")
            return
        sent = time.monotonic()
        lease, ttl = self.client.lease_grant(LEASE_TTL)
        won, reply = self.client.txn(
            [compare(self.k_proposer, "CREATE", "==", 0)],
            [op_put(self.k_proposer, self.node_id, lease=lease)],
            [op_range(self.k_proposer)],
        )
        revision = int((reply.get("header") or {}).get("revision") or 0)
        if not won:
            kvs = self.client.txn_range_kvs(reply)
            self._proposer_seen = kvs[0].value.decode("utf-8", "replace") if kvs else None
            try:
                self.client.lease_revoke(lease)
            except EtcdError:
                pass  # expires by itself
            return
        self._lease_revision = revision  # set before _lease: the watch compares with it
        self._lease = lease
        self._lease_deadline = sent + ttl - 0.5
        self._proposer_seen = self.node_id
        self._progress_at = time.monotonic()  # give ourselves a full bound before anyone deposes us
        self._need_sync = True
        logger.info("node %s is now the proposer (lease %x)", self.node_id, lease)
        self._wake_proposer.set()

    def _keep_alive(self) -> None:
        sent = time.monotonic()
        ttl = self.client.lease_keepalive(self._lease)
        if ttl <= 0:
            self._resign("lease expired")
            return
        self._lease_deadline = sent + ttl - 0.5

    def _deposed(self, revision: int, why: str) -> None:
        """The watch saw P/proposer change after our own put: another node took over.

        Our commits would fail their lease compare anyway; stop trying, and let the lease
        go (best effort: it may be pinned by someone else's keep-alives, which no longer
        matters)."""
        lease = self._lease
        if not lease or revision <= self._lease_revision:
            return
        self._resign(why)
        try:
            self.client.lease_revoke(lease)
        except EtcdError as exc:
            logger.info("could not revoke the old proposer lease: %s", exc)

    def _take_over(self) -> bool:
        """Depose a proposer that leaves pending batches without a block; True if deposed.

        etcd checks no permission on lease keep-alives: any authenticated client (another
        app's credential) can keep the lease of a dead proposer alive forever, and with it
        ``P/proposer``. So liveness is judged by progress: pending batches older than
        ``takeover_after`` while the chain did not move for as long. Local clocks only
        (monotonic); the chain's height and the pending keys are re-read from etcd first,
        so a node whose own watch lags does not depose a working proposer. Deposing is
        always safe: every commit compares ``P/height`` and the proposer's lease.
        """
        now = time.monotonic()
        bound = self.takeover_after
        seen = dict(self._pending_since)  # a copy: the watch thread changes it
        if not seen or now - self._progress_at < bound or now - min(seen.values()) < bound:
            return False
        height = self._read_height()
        if height > self._progress_height:
            self._note_progress(height)
            return False
        res = self.client.range(self.k_pending, prefix_end(self.k_pending), keys_only=True)
        live = {kv.key.decode("utf-8", "replace") for kv in res.kvs}
        waited = [now - since for key, since in seen.items() if key in live and now - since >= bound]
        if not waited:
            return False
        holder = self.client.get(self.k_proposer)
        if holder is None:
            return True  # gone meanwhile: campaign
        if holder.value.decode("utf-8", "replace") == self.node_id and holder.lease == self._lease:
            return False
        won, _ = self.client.txn(
            [compare(self.k_proposer, "MOD", "==", holder.mod_revision)], [op_delete(self.k_proposer)]
        )
        self._progress_at = now  # the next proposer gets a full bound
        if not won:
            return False  # changed meanwhile (another node deposed it, or a new proposer)
        logger.warning(
            "node %s deposed proposer %s (lease %x): pending batches waited %.0fs with no block",
            self.node_id,
            holder.value.decode("utf-8", "replace"),
            holder.lease,
            max(waited),
        )
        try:  # best effort: if its holder is alive, its keep-alive now reports the loss
            self.client.lease_revoke(holder.lease)
        except EtcdError as exc:
            logger.info("could not revoke the deposed proposer's lease: %s", exc)
        self._proposer_seen = None
        return True

    def _resign(self, why: str) -> None:
        if self._lease:
            logger.warning("node %s stops proposing: %s", self.node_id, why)
        self._lease = 0
        self._lease_deadline = 0.0
        self._wake_election.set()

    # ------------------------------------------------------------------ proposing

    def _propose_loop(self) -> None:
        while not self._stop.is_set():
            if not self.is_proposer:
                if self._local and not self._hand_over_local():
                    self._stop.wait(0.2)  # etcd did not take them: try again
                    continue
                self._wake_proposer.wait(0.5)
                self._wake_proposer.clear()
                continue
            try:
                if not self._propose_once():
                    self._wake_proposer.wait(IDLE_POLL)
                    self._wake_proposer.clear()
            except EtcdAuthError as exc:
                self._note(f"propose: {exc}")
                self._stop.wait(0.5)
            except EtcdError as exc:
                self._note(f"propose: {exc}")
                self._stop.wait(0.1)
            except Exception as exc:
                self._note(f"propose: {exc!r}")
                logger.exception("proposing a block failed")
                self._stop.wait(0.5)

    def _propose_once(self) -> bool:
        """Cut and commit at most one block; False when there was nothing to do."""
        if self._need_sync or int(self.core.height) < self._committed_height:
            committed = self._read_height()
            if int(self.core.height) < committed:
                self._catch_up_for_proposal(committed)
                return True
            self._need_sync = False
        committed = int(self.core.height)  # the CAS on P/height catches a stale view
        pending = self._read_pending()
        if not pending:
            return False
        if sum(len(batch) for _, batch in pending) < self.max_txs and self.max_wait > 0:
            self._stop.wait(self.max_wait)  # let a batch gather
            pending = self._read_pending() or pending
        return self._commit(committed, pending)

    def _hand_over_local(self) -> bool:
        """No longer proposing: put what this node received meanwhile in P/pending, for
        whichever node proposes next. False when etcd did not take them (kept to retry)."""
        with self._local_lock:
            if self.is_proposer and not self._stop.is_set():
                return True  # proposing again: they go in its blocks
            envelopes = list(self._local)
            self._local.clear()
        if not envelopes:
            return True
        try:
            self._put_pending(envelopes)
        except OrderingUnavailable:
            with self._local_lock:
                self._local.extendleft(reversed(envelopes))
            return False
        logger.info("node %s handed %d submissions to the next proposer", self.node_id, len(envelopes))
        return True

    def _catch_up_for_proposal(self, committed: int) -> None:
        deadline = time.monotonic() + 5.0
        while int(self.core.height) < committed and time.monotonic() < deadline and self.is_proposer:
            try:
                self._catch_up()
            except _Gap:
                pass

    def _read_pending(self) -> list[tuple[str | None, list[dict]]]:
        """(key, envelopes) of the oldest whole pending batches that fit in one block,
        then (None, envelopes) of this node's own submissions that still fit.

        Lists keys only; a batch's envelopes come from this node's own submissions or
        from the watch, and are read from etcd only when neither has them. An
        unreadable batch is returned with no envelopes, so the commit deletes it.
        """
        res = self.client.range(
            self.k_pending,
            prefix_end(self.k_pending),
            limit=self.max_txs,
            sort_order="ASCEND",
            sort_target="CREATE",
            keys_only=True,
        )
        out: list[tuple[str, list[dict]]] = []
        count = size = 0
        for kv in sorted(res.kvs, key=lambda kv: (kv.create_revision, kv.key)):
            key = kv.key.decode("utf-8", "replace")
            envelopes, nbytes = self._pending_batch(key)
            if out and (count + len(envelopes) > self.max_txs or size + nbytes > MAX_BLOCK_BYTES):
                break
            out.append((key, envelopes))
            count += len(envelopes)
            size += nbytes
        local: list[dict] = []
        with self._local_lock:
            for envelope in self._local:
                nbytes = len(_envelope_bytes(envelope)) + 1
                if (out or local) and (count + 1 > self.max_txs or size + nbytes > MAX_BLOCK_BYTES):
                    break
                local.append(envelope)
                count += 1
                size += nbytes
        if local:
            out.append((None, local))  # this node's own, from memory (always last)
        return out

    def _pending_batch(self, key: str) -> tuple[list[dict], int]:
        """(envelopes, size in bytes) of one pending batch."""
        mine = self._mine.get(key)
        if mine is not None:
            return mine
        raw = self._seen.get(key)
        if raw is None:
            kv = self.client.get(key)
            if kv is None:
                return [], 0  # deleted meanwhile: the commit's delete is a no-op
            raw = kv.value
        try:
            envelopes = loads(raw)
            if not isinstance(envelopes, list):
                raise ValueError("not a list")
        except ValueError:
            logger.warning("dropping unreadable pending batch %r", key)
            return [], len(raw)
        return envelopes, len(raw)

    def _forget_settled(self, live: set[str]) -> None:
        """``live``: the pending keys as just read. Forget cached batches that are no longer
        pending (their delete was missed); start the take-over clock of those never seen."""
        for cache in (self._mine, self._seen, self._pending_since):
            for key in [k for k in cache if k not in live]:
                cache.pop(key, None)
        now = time.monotonic()
        for key in live:
            self._pending_since.setdefault(key, now)

    def _commit(self, height: int, pending: list[tuple[str | None, list[dict]]]) -> bool:
        # The core lock is held from building the block until it is applied, so the
        # watch, which delivers this same block, waits and then skips it instead of
        # parsing and verifying it again.
        with self._core_lock:
            return self._commit_locked(height, pending)

    def _commit_locked(self, height: int, pending: list[tuple[str | None, list[dict]]]) -> bool:
        envelopes = [env for _, batch in pending for env in batch]
        keys = [key for key, _ in pending if key is not None]
        local = sum(len(batch) for key, batch in pending if key is None)
        if int(self.core.height) != height:
            return True  # moved meanwhile; look again
        prev_ts = getattr(self.core, "last_timestamp", None)
        if prev_ts is None:  # a core that does not track it: read the head block
            head = self.core.block(height) if height else None
            prev_ts = int(((head or {}).get("header") or {}).get("timestamp") or 0)
        # Envelopes are this node's prechecked ones or parsed with loads(): no type walk needed.
        block = self.core.make_block(envelopes, max(int(time.time() * 1000), prev_ts), parsed=True)
        new_height = int(block["header"]["height"])
        if new_height != height + 1:
            raise EtcdError(f"core made block {new_height} on top of {height}")
        if not self.is_proposer:
            return True  # lost the lease while building: not ours to commit
        if not block.get("txs"):
            # Everything was left out (already in the chain, replayed nonce, bad signature):
            # no empty block; just clear those entries, still only as the proposer.
            if keys:
                self.client.txn(
                    [compare(self.k_proposer, "LEASE", "==", self._lease)], [op_delete(key) for key in keys]
                )
            self._forget(keys, local)
            return True
        compares = [
            compare(self.k_height, "VALUE", "==", str(height)) if height else compare(self.k_height, "CREATE", "==", 0),
            compare(self.k_proposer, "LEASE", "==", self._lease),
        ]
        ops = [op_put(self.k_height, str(new_height)), op_put(self._block_key(new_height), _block_bytes(block))]
        ops += [op_delete(key) for key in keys]  # included, or dropped by make_block as invalid
        if new_height - self.window >= 1:
            ops.append(op_delete(self._block_key(new_height - self.window)))
        try:
            won, _ = self.client.txn(compares, ops)
        except EtcdUnavailable:
            # Outcome unknown: the watch (or the next round's re-read) tells what happened.
            self._need_sync = True
            raise
        if not won:
            logger.info("block %s lost the compare-and-swap; re-syncing", new_height)
            self._need_sync = True
            return True
        self._forget(keys, local)
        self._committed_height = max(self._committed_height, new_height)
        self._apply(new_height, block)
        return True

    def _forget(self, keys: list[str], local: int = 0) -> None:
        """Forget included batches, and the first ``local`` of this node's own submissions."""
        if local:
            with self._local_lock:  # stop() may have handed them over meanwhile
                for _ in range(min(local, len(self._local))):
                    self._local.popleft()
        for key in keys:
            self._mine.pop(key, None)
            self._seen.pop(key, None)
            self._pending_since.pop(key, None)

    def _note(self, message: str) -> None:
        if message != self.last_error:
            logger.warning("%s: %s", self.node_id, message)
        self.last_error = message


class _Gap(Exception):
    """The watch delivered a block beyond the next height: range from our height instead."""

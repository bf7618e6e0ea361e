"""Gateway counters and the daily volume quota: cheap writes in Redis, shared by every web process.

Counters (docs/metering.md, "Gateway counters"). Each gateway request adds its counts with
one ``MULTI`` of ``HINCRBY`` on the hash of its UTC hour, ``<prefix>h:<YYYYMMDDHH>``, field
``<app id>|<region id>|<counter>``. The flush (``flush``, a beat task) moves each hour hash
out of the way with ``RENAME`` to a batch key ``<prefix>f:<YYYYMMDDHH>:<random>`` — atomic,
so later increments start a new hash and none is lost — then adds every batch key it finds
(its own and any left by a worker that died) to ``UsageHour`` with ``F()`` additions, in
one transaction that also inserts a ``CounterFlush`` row named by the batch key. That row
is the claim: a second worker adding the same batch blocks on the unique key and rolls
back, and a batch whose ``DEL`` was lost after the commit is recognised and only deleted.
So every increment reaches PostgreSQL exactly once.

Daily volume: one counter per tenant and UTC day, ``<prefix>vol:<tenant id>:<YYYYMMDD>``,
checked and increased by one Lua script (refused requests add nothing).

Without Redis (the embedded default: one web process, SQLite) counts go straight to the
database and the volume counter lives in this process.

Hand-written rather than a metrics library: prometheus_client's multiprocess mode keeps
counters in per-process files on one host, not across hosts, and does not feed a
database per hour; what is needed here is a dozen Redis commands.
"""

from __future__ import annotations

import logging
import threading
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings

logger = logging.getLogger(__name__)

FIELDS = ("tx_committed", "tx_failed", "tx_rejected", "bytes_in", "bytes_out")

# KEYS[1]: the tenant's counter of the day; ARGV: bytes, limit, ttl seconds.
# Returns {1, used after} when admitted (and added), {0, used} when over the limit.
_VOLUME_TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local n, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if used + n > limit then return {0, used} end
used = redis.call('INCRBY', KEYS[1], n)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {1, used}
"""

VOLUME_TTL = 2 * 86400  # a day's counter outlives its day, then goes


class Unavailable(Exception):
    """Redis did not answer."""


@dataclass
class Tally:
    """What one gateway request adds to its app's usage: filled by the view and the gateway."""

    app_id: str | None = None
    region_id: int | None = None  # the region of the node that answered; None: no node did
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int = 1) -> None:
        if n:
            self.counts[name] = self.counts.get(name, 0) + n


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _hour_tag(moment: datetime) -> str:
    return f"{hour_of(moment):%Y%m%d%H}"


def _day_tag(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y%m%d}"


def _field(app_id: str, region_id: int, name: str) -> str:
    return f"{app_id}|{region_id}|{name}"


def parse_batch(raw: dict) -> dict[tuple[str, int], dict[str, int]]:
    """``{field: count}`` of a hash → ``{(app id, region id): {counter: n}}``; unknown fields dropped."""
    rows: dict[tuple[str, int], dict[str, int]] = {}
    for key, value in raw.items():
        key = key.decode() if isinstance(key, bytes) else key
        try:
            app_id, region_id, name = key.split("|")
            n = int(value)
            region = int(region_id)
        except ValueError:
            logger.warning("metering: dropping unreadable counter field %r", key)
            continue
        if name in FIELDS and n:
            row = rows.setdefault((app_id, region), {})
            row[name] = row.get(name, 0) + n
    return rows


class RedisCounters:
    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self.volume_script = self.client.register_script(_VOLUME_TAKE)

    # --- counters

    def add(self, tally: Tally, at: datetime) -> None:
        key = f"{self.prefix}h:{_hour_tag(at)}"
        pipe = self.client.pipeline(transaction=True)  # a request's counts land together or not at all
        for name, n in tally.counts.items():
            pipe.hincrby(key, _field(tally.app_id, tally.region_id, name), n)
        pipe.execute()

    def detach_hours(self) -> list[str]:
        """RENAME every hour hash to a fresh batch key; the batch keys (only this call's)."""
        import redis

        moved = []
        for key in self.client.scan_iter(match=f"{self.prefix}h:*", count=500):
            key = key.decode()
            tag = key.rsplit(":", 1)[1]
            batch = f"{self.prefix}f:{tag}:{uuid.uuid4().hex}"
            try:
                self.client.rename(key, batch)
            except redis.ResponseError:  # another flusher moved it first
                continue
            moved.append(batch)
        return moved

    def batches(self) -> list[str]:
        """Every batch key waiting to be added: this flush's and any left behind."""
        return sorted(k.decode() for k in self.client.scan_iter(match=f"{self.prefix}f:*", count=500))

    def read_batch(self, key: str) -> dict:
        return self.client.hgetall(key)

    def drop_batch(self, key: str) -> None:
        self.client.delete(key)

    def pending(self) -> int:
        """Hour hashes and batches not yet in the database (for tests and the status line)."""
        return sum(1 for _ in self.client.scan_iter(match=f"{self.prefix}[hf]:*", count=500))

    # --- daily volume

    def _volume_key(self, tenant_id: str, at: datetime) -> str:
        return f"{self.prefix}vol:{tenant_id}:{_day_tag(at)}"

    def volume_take(self, tenant_id: str, n: int, limit: int, at: datetime) -> tuple[bool, int]:
        import redis

        try:
            ok, used = self.volume_script(keys=[self._volume_key(tenant_id, at)], args=[n, limit, VOLUME_TTL])
        except redis.RedisError as exc:
            raise Unavailable(str(exc)) from exc
        return bool(ok), int(used)

    def volume_refund(self, tenant_id: str, n: int, at: datetime) -> None:
        import redis

        try:
            self.client.decrby(self._volume_key(tenant_id, at), n)
        except redis.RedisError as exc:
            logger.warning("metering: could not give back %s volume bytes of tenant %s: %s", n, tenant_id, exc)

    def volume_used(self, tenant_id: str, at: datetime) -> int:
        import redis

        try:
            return int(self.client.get(self._volume_key(tenant_id, at)) or 0)
        except redis.RedisError as exc:
            raise Unavailable(str(exc)) from exc


class DirectCounters:
    """No Redis (the embedded default, one web process): counts go straight to UsageHour,
    the volume counter stays in this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.volume: dict[str, int] = {}

    def add(self, tally: Tally, at: datetime) -> None:
        from apps.metering.services import usage_add

        usage_add(rows={(tally.app_id, tally.region_id): tally.counts}, hour=hour_of(at))

    def detach_hours(self) -> list[str]:
        return []

    def batches(self) -> list[str]:
        return []

    def pending(self) -> int:
        return 0

    def volume_take(self, tenant_id: str, n: int, limit: int, at: datetime) -> tuple[bool, int]:
        key = f"{tenant_id}:{_day_tag(at)}"
        with self.lock:
            used = self.volume.get(key, 0)
            if used + n > limit:
                return False, used
            self.volume[key] = used + n
            return True, used + n

    def volume_refund(self, tenant_id: str, n: int, at: datetime) -> None:
        key = f"{tenant_id}:{_day_tag(at)}"
        with self.lock:
            self.volume[key] = max(0, self.volume.get(key, 0) - n)

    def volume_used(self, tenant_id: str, at: datetime) -> int:
        with self.lock:
            return self.volume.get(f"{tenant_id}:{_day_tag(at)}", 0)


_store: RedisCounters | DirectCounters | None = None
_store_lock = threading.Lock()


def store() -> RedisCounters | DirectCounters:
    """Redis when ``BSN_METERING_REDIS_URL`` (default: the TPS buckets' Redis) names one."""
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                url = settings.BSN_METERING_REDIS_URL
                if url.startswith(("redis://", "rediss://", "unix://")):
                    _store = RedisCounters(url, settings.BSN_METERING_REDIS_PREFIX)
                else:
                    _store = DirectCounters()
    return _store


def reset_store() -> None:
    """For tests and settings changes."""
    global _store
    with _store_lock:
        _store = None


# The tally of the gateway request being served in this thread/task, if it is metered: the
# gateway's node choice (apps.gateway.services._call) notes the region that answered.
current: ContextVar[Tally | None] = ContextVar("bsn_gateway_tally", default=None)


def record(tally: Tally, at: datetime) -> bool:
    """Add a request's tally; never fails the request (the tenant's transaction is done by
    now): a Redis that does not answer loses these counts, logged."""
    if tally.app_id is None or tally.region_id is None or not tally.counts:
        return False
    try:
        store().add(tally, at)
    except Exception as exc:  # noqa: BLE001 - any store failure: log, never fail the answered request
        logger.warning("metering: counts of app %s not recorded: %s", tally.app_id, exc)
        return False
    return True


def note_node(*, app_id, region_id: int) -> None:
    """The gateway reached a node of ``app_id`` in ``region_id`` for the current request."""
    tally = current.get()
    if tally is not None:
        tally.app_id, tally.region_id = str(app_id), region_id


def count_answer(tally: Tally, *, submission: bool, status: int, data, bytes_in: int, bytes_out: int) -> None:
    """Fill ``tally`` from what the gateway answered: bytes both ways and, for submissions,
    the transactions by receipt (``committed``, ``failed``; ``rejected``: the node refused
    it, a 400 with the node's reason or a rejected item of a batch)."""
    tally.add("bytes_in", bytes_in)
    tally.add("bytes_out", bytes_out)
    if not submission:
        return
    if status == 200 and isinstance(data, dict):
        receipts = data["receipts"] if isinstance(data.get("receipts"), list) else [data]
        for receipt in receipts:
            state = receipt.get("status") if isinstance(receipt, dict) else None
            if state in ("committed", "failed", "rejected"):
                tally.add(f"tx_{state}")
    elif status == 400 and tally.region_id is not None:
        tally.add("tx_rejected")

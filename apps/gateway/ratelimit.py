"""Transactions per second, enforced at the gateway: token buckets shared by every web process.

Each app has a bucket of ``tps_quota`` tokens refilled at ``tps_quota`` per second, and
each tenant one of ``max_tps``; a transaction (each one of a batch) takes a token from
both, or from neither. The buckets live in Redis and one Lua script refills and takes
atomically, timed by Redis's own clock, so every web process sees the same buckets and
no clock skew between them matters: whatever the number of processes, what is admitted
in any interval of ``t`` seconds is at most ``rate × t`` plus one bucket (the burst).

Hand-written rather than a rate-limit library: the known Django/DRF throttles count
requests per user in the cache (not transactions, not two buckets at once, and not
atomically across processes); the algorithm is the ten lines of Lua below.

Without Redis (the embedded default: one web process, a filesystem broker) the buckets
are kept in this process with the same arithmetic.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

# KEYS: the buckets; ARGV: n, then rate and capacity per bucket. Returns {1, 0, 0} when
# the n tokens were taken from every bucket, else {0, wait ms, index of the bucket that
# refused} and nothing taken.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local tokens, wait, who = {}, 0, 0
for i, key in ipairs(KEYS) do
  local rate, cap = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local v = redis.call('HMGET', key, 'tokens', 'at')
  local have, at = tonumber(v[1]), tonumber(v[2])
  if have == nil then have, at = cap, now end
  have = math.min(cap, have + math.max(0, now - at) * rate / 1000)
  tokens[i] = have
  if have < n then
    local need = (n - have) * 1000 / rate
    if need > wait then wait, who = need, i end
  end
end
if wait > 0 then return {0, math.ceil(wait), who} end
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, 'tokens', tostring(tokens[i] - n), 'at', tostring(now))
  redis.call('PEXPIRE', key, 600000)
end
return {1, 0, 0}
"""


# KEYS: the buckets; ARGV: rate and capacity per bucket. The tokens each holds now
# (refilled, nothing taken or written), as strings.
_PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local rate, cap = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local v = redis.call('HMGET', key, 'tokens', 'at')
  local have, at = tonumber(v[1]), tonumber(v[2])
  if have == nil then have, at = cap, now end
  out[i] = tostring(math.min(cap, have + math.max(0, now - at) * rate / 1000))
end
return out
"""


class Unavailable(Exception):
    """The bucket store (Redis) did not answer."""


@dataclass(frozen=True)
class Bucket:
    key: str  # e.g. "app:<id>", "tenant:<id>"
    rate: float  # tokens per second
    capacity: float  # the burst: one second's worth


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    wait_s: float = 0.0
    refused_by: Bucket | None = None


class RedisBuckets:
    def __init__(self, url: str, prefix: str = "bsn:tps:") -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self.script = self.client.register_script(_TAKE)
        self.peek_script = self.client.register_script(_PEEK)

    def take(self, buckets: list[Bucket], n: int = 1) -> Verdict:
        import redis

        args: list[float] = [n]
        for b in buckets:
            args += [b.rate, b.capacity]
        try:
            ok, wait_ms, who = self.script(keys=[self.prefix + b.key for b in buckets], args=args)
        except redis.RedisError as exc:
            raise Unavailable(str(exc)) from exc
        if ok:
            return Verdict(True)
        return Verdict(False, int(wait_ms) / 1000, buckets[int(who) - 1])

    def peek(self, buckets: list[Bucket]) -> list[float]:
        """The tokens each bucket holds now (nothing taken)."""
        import redis

        args = [x for b in buckets for x in (b.rate, b.capacity)]
        try:
            return [float(v) for v in self.peek_script(keys=[self.prefix + b.key for b in buckets], args=args)]
        except redis.RedisError as exc:
            raise Unavailable(str(exc)) from exc


class LocalBuckets:
    """The same buckets in this process (one web process: the embedded default)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: dict[str, tuple[float, float]] = {}

    def take(self, buckets: list[Bucket], n: int = 1) -> Verdict:
        with self.lock:
            now = time.monotonic()
            tokens, wait, who = [], 0.0, None
            for b in buckets:
                have, at = self.state.get(b.key, (b.capacity, now))
                have = min(b.capacity, have + max(0.0, now - at) * b.rate)
                tokens.append(have)
                if have < n and (n - have) / b.rate > wait:
                    wait, who = (n - have) / b.rate, b
            if who is not None:
                return Verdict(False, math.ceil(wait * 1000) / 1000, who)
            for b, have in zip(buckets, tokens, strict=True):
                self.state[b.key] = (have - n, now)
            return Verdict(True)

    def peek(self, buckets: list[Bucket]) -> list[float]:
        with self.lock:
            now = time.monotonic()
            out = []
            for b in buckets:
                have, at = self.state.get(b.key, (b.capacity, now))
                out.append(min(b.capacity, have + max(0.0, now - at) * b.rate))
            return out


_store: RedisBuckets | LocalBuckets | None = None
_store_lock = threading.Lock()


def store() -> RedisBuckets | LocalBuckets:
    """The process's bucket store: Redis when ``BSN_RATE_LIMIT_URL`` (default: the broker
    URL when it is Redis) names one, else this process."""
    global _store
    if _store is None:
        from django.conf import settings

        with _store_lock:
            if _store is None:
                url = settings.BSN_RATE_LIMIT_URL
                _store = RedisBuckets(url) if url.startswith(("redis://", "rediss://", "unix://")) else LocalBuckets()
    return _store


def reset_store() -> None:
    """For tests and settings changes."""
    global _store
    with _store_lock:
        _store = None

"""A process taking tokens from one Redis bucket as fast as it can (no Django: it runs in
spawned processes, tests/gateway/test_tps_quota.py)."""

from __future__ import annotations

import time

from apps.gateway import ratelimit


def hammer(url: str, key: str, rate: float, seconds: float, start: float, out) -> None:
    buckets = ratelimit.RedisBuckets(url)
    bucket = [ratelimit.Bucket(key, rate, rate)]
    admitted = []
    while time.time() < start:
        time.sleep(0.001)
    while time.time() < start + seconds:  # bounded in time (and by the bucket in count)
        if buckets.take(bucket).admitted:
            admitted.append(time.time())
    out.put(admitted)

"""Processes for the concurrent flush test (tests/metering/test_counters.py): ``count`` adds
random tallies straight to the Redis counters for a while and writes what it added;
``flush`` runs the flush in a loop. Run as ``python -m tests.metering.churn <role> …``."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from datetime import timedelta


def main(role: str, seconds: float, seed: int, out_path: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bsn.settings_test")
    import django

    django.setup()
    from django.utils import timezone

    from apps.metering import counters, services

    end = time.time() + seconds
    if role == "flush":
        rounds = 0
        while time.time() < end:
            services.counters_flush()
            rounds += 1
            time.sleep(0.01)
        with open(out_path, "w") as out:
            json.dump({"rounds": rounds}, out)
        return
    targets = json.loads(os.environ["CHURN_TARGETS"])
    rng = random.Random(seed)
    store = counters.store()
    added: dict[str, int] = {}
    while time.time() < end:
        app_id, region_id = rng.choice(targets)
        at = timezone.now() - timedelta(hours=rng.choice([0, 0, 1, 2]))  # several hour hashes at once
        tally = counters.Tally(app_id=app_id, region_id=region_id)
        for name in counters.FIELDS:
            tally.add(name, rng.randint(0, 3))
        if not tally.counts:
            continue
        store.add(tally, at)  # raises if it did not land: then nothing is written below
        hour = counters.hour_of(at).isoformat()
        for name, n in tally.counts.items():
            key = f"{app_id}|{region_id}|{hour}|{name}"
            added[key] = added.get(key, 0) + n
    with open(out_path, "w") as out:
        json.dump(added, out)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4])

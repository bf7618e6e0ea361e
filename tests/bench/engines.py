"""Three regions on three Docker engines from warm nodes: the shape issue 9 asks regions to
have (each a separate engine), beside the bench's usual three regions on this machine's one
engine. Run by ``figures.provisioning`` as ``python -m tests.bench.engines`` in a database
of its own: a new installation, so that its ordering service is placed over the three
engines (one member each) from the start, as a platform whose regions are three engines
has it. The engines are the test harness's (tests/engines.py: ``e2`` on its own socket,
``e3`` over TLS with client certificates), under its lock, stopped at the end, also on
failure. The last line printed is the JSON object ``figures._warm_provisioning`` returns.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bsn.settings_test")
os.environ.setdefault("DATABASE_URL", "postgres:///bsn_bench_engines?host=/var/run/postgresql")


def measure(runs: int) -> dict[str, list[float]]:
    """Seconds and CPU-seconds of ``runs`` creates on one region and on three."""
    from pathlib import Path

    import docker
    from django.conf import settings
    from django.core.management import call_command

    from tests.bench.figures import _warm_provisioning
    from tests.bench.suite import _remove_installation_objects
    from tests.conftest import ENGINES_STATE
    from tests.engines import clear_engine, engines_lock, main_engine, start_extra_engines

    call_command("migrate", verbosity=0)
    lock = engines_lock(Path(ENGINES_STATE), timeout=600)
    main_client = docker.DockerClient(base_url=settings.BSN_DOCKER_BASE_URL, timeout=60)
    started = []
    try:
        started = start_extra_engines(Path(ENGINES_STATE))
        return _warm_provisioning(runs, engines=[main_engine(main_client, Path(ENGINES_STATE)), *started])
    finally:
        _remove_installation_objects(main_client)
        for engine in started:
            try:
                client = engine.client()
                clear_engine(client)
                client.close()
            finally:
                engine.stop()
        lock.close()


def main() -> int:
    from tests.bench.database import drop_database, fresh_database

    name = fresh_database()
    import django

    django.setup()
    try:
        from tests.bench.figures import WARM_RUNS  # as many runs as the warm rows on one engine

        result = measure(int(os.environ.get("BENCH_RUNS", str(WARM_RUNS))))
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(name)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

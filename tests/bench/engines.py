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
import subprocess
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bsn.settings_test")
os.environ.setdefault("DATABASE_URL", "postgres:///bsn_bench_engines?host=/var/run/postgresql")


def measure(runs: int) -> dict[str, list[float]]:
    from pathlib import Path

    import docker
    from django.conf import settings
    from django.core.management import call_command

    from apps.common.models import installation_id
    from tests.bench.figures import _warm_provisioning
    from tests.conftest import ENGINES_STATE, _clear_engine
    from tests.engines import Engine, engines_lock, publish_network_gateway, start_engine

    call_command("migrate", verbosity=0)
    lock = engines_lock(Path(ENGINES_STATE), timeout=600)
    started: list[Engine] = []
    main_client = docker.DockerClient(base_url=settings.BSN_DOCKER_BASE_URL, timeout=60)
    try:
        for name, pool, tls in (("e2", "172.24.0.0/16", False), ("e3", "172.25.0.0/16", True)):
            engine = start_engine(name, pool=pool, tls=tls, state_dir=Path(ENGINES_STATE))
            started.append(engine)
            client = engine.client()
            _clear_engine(client)
            engine.publish_host = publish_network_gateway(client)
            client.close()
        main = Engine(name="main", base_url=settings.BSN_DOCKER_BASE_URL, root=Path(ENGINES_STATE) / "main")
        main.publish_host = publish_network_gateway(main_client)
        return _warm_provisioning(runs, engines=[main, *started])
    finally:
        selector = {"label": f"io.bsn.installation={installation_id()}"}
        for container in main_client.containers.list(all=True, filters=selector):
            container.remove(force=True, v=True)
        for network in main_client.networks.list(filters=selector):
            network.remove()
        for volume in main_client.volumes.list(filters=selector):
            volume.remove(force=True)
        for engine in started:
            try:
                client = engine.client()
                _clear_engine(client)
                client.close()
            finally:
                engine.stop()
        lock.close()


def main() -> int:
    from urllib.parse import urlparse

    name = urlparse(os.environ["DATABASE_URL"]).path.lstrip("/")
    pg = {**os.environ, "PGHOST": "/var/run/postgresql"}
    for argv in (["dropdb", "--if-exists", name], ["createdb", name]):
        subprocess.run(argv, check=True, env=pg)
    import django

    django.setup()
    try:
        result = measure(int(os.environ.get("BENCH_RUNS", "3")))
    finally:
        from django.db import connections

        connections.close_all()
        subprocess.run(["dropdb", "--if-exists", name], check=False, env=pg)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

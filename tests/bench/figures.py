"""Individual benchmark figures (see suite.py for the runner)."""

from __future__ import annotations

import statistics
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from tests.bench.suite import (
    Figure,
    engine_floor_to_healthy,
    raw_docker_run_to_healthy,
    raw_docker_runs_at_once,
)

ROOT = Path(__file__).resolve().parents[2]
# Creates of each shape in the warm rows (the same in tests/bench/engines.py): the three-
# region figure is a ratio of two medians on a shared two-core machine, where a median of
# three moved with one slow run (a 1.56 s run beside 0.31 s ones, 5 December).
WARM_RUNS = 5


@contextmanager
def bench_stack(regions: int, *, driver: str = "docker", engines=None, **region_fields):
    """Tenant, regions (Docker unless said otherwise) and a real Celery worker on the bench
    database. ``engines`` (tests/engines.py ``Engine``s, one per region): each region on its
    own engine, registered as an operator does (``engine_region``)."""
    from django.db import connection

    from apps.chainapps.builtin import ensure_builtin_framework
    from apps.chainapps.models import Framework
    from apps.regions.models import Region
    from apps.tenants.models import Membership, Role, Tenant
    from apps.tenants.services import token_issue
    from tests.integration.conftest import Worker, _database_url

    ensure_builtin_framework(Framework)
    # The image named by BSN_LEDGER_IMAGE (the shared `latest` tag may be another build).
    Framework.objects.filter(builtin=True).update(image=settings.BSN_LEDGER_IMAGE)
    tag = uuid.uuid4().hex[:6]
    if engines:
        from tests.engines import engine_region

        made = [engine_region(e, f"bench{tag}-{i}", f"bench {e.name}") for i, e in enumerate(engines[:regions])]
        Region.objects.filter(pk__in=[r.pk for r in made]).update(**region_fields)
        region_rows = list(Region.objects.filter(pk__in=[r.pk for r in made]).order_by("code"))
    else:
        region_rows = [
            Region.objects.create(code=f"bench{tag}-{i}", name=f"bench {i}", driver=driver, **region_fields)
            for i in range(regions)
        ]
    tenant = Tenant.objects.create(
        slug=f"bench-{tag}", name="bench", max_apps=100, max_nodes=300, max_tps=100_000, max_storage_mb=10_000_000
    )
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username=f"bench-{tag}")
    membership = Membership.objects.create(tenant=tenant, user=user, role=Role.OWNER)
    token = token_issue(membership=membership, name="bench").secret
    log = Path(settings.DATA_DIR) / f"bench-worker-{tag}.log"
    import os

    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "BSN_RECONCILE_INTERVAL": "3600",
        "DJANGO_SETTINGS_MODULE": "bsn.settings_test",
        "PYTHONUNBUFFERED": "1",
    }
    worker = Worker([settings.CELERY_TASK_DEFAULT_QUEUE, *[r.queue for r in region_rows]], log, env)
    connection.close()
    worker.start()
    try:
        yield region_rows, token
    finally:
        worker.stop()


def _api(token: str):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def _until(check, what: str, *, timeout: float, interval: float):
    """``check()``'s first truthy answer, asked every ``interval`` s; TimeoutError naming
    ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def _wait_op(client, url: str, timeout: float = 180, interval: float = 0.02) -> dict:
    def ended() -> dict | None:
        body = client.get(url).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return _until(ended, url, timeout=timeout, interval=interval)


def _create_and_wait(client, regions: list[str]) -> tuple[float, str]:
    """Seconds from the POST to the moment the platform recorded the operation's end (its
    ``finished_at``: every node verified healthy, recorded by the worker, so how often the
    bench looks does not change the figure). While it runs the bench looks at the
    operation's row (one indexed SELECT every 0.1 s), then reads the operation once through
    the API: a look through the API is a whole request in this process (token, tenant
    scope, serializer), on the same two cores as the worker and the starting nodes, so
    polling it slows what it measures (docs/benchmarks.md, "Reading the figures")."""
    from datetime import datetime

    start = time.time()  # wall clock: compared with the worker's timestamp (same machine)
    resp = client.post("/api/v1/apps", {"name": f"b{uuid.uuid4().hex[:8]}", "regions": regions}, format="json")
    assert resp.status_code == 202, resp.content
    _wait_ended(resp.json()["id"])
    op = _wait_op(client, resp["Location"])
    assert op["status"] == "succeeded", op
    elapsed = datetime.fromisoformat(op["finished_at"].replace("Z", "+00:00")).timestamp() - start
    assert 0 < elapsed <= time.time() - start, (elapsed, op)
    return elapsed, resp.json()["app"]


def _wait_ended(op_id: str, timeout: float = 180, interval: float = 0.1) -> None:
    """Until the operation's row says it has ended (the API's view is read after)."""
    from apps.chainapps.models import Operation

    ended = Operation.objects.filter(pk=op_id, finished_at__isnull=False)
    _until(ended.exists, f"operation {op_id} ending", timeout=timeout, interval=interval)


def _delete(client, app_id: str) -> None:
    resp = client.delete(f"/api/v1/apps/{app_id}?keep_data=false")
    _wait_op(client, resp["Location"])


def provisioning(engine, notes: list[str]) -> list[Figure]:
    raw = raw_docker_run_to_healthy(engine, settings.BSN_LEDGER_IMAGE)
    floor = engine_floor_to_healthy(engine, settings.BSN_LEDGER_IMAGE)
    raw_three = raw_docker_runs_at_once(engine, settings.BSN_LEDGER_IMAGE)
    with bench_stack(regions=3) as (regions, token):
        client = _api(token)
        codes = [r.code for r in regions]
        one, three = [], []
        for _ in range(3):
            elapsed, app = _create_and_wait(client, codes[:1])
            one.append(elapsed)
            _delete(client, app)
            elapsed, app = _create_and_wait(client, codes)
            three.append(elapsed)
            _delete(client, app)
    one_s, three_s = statistics.median(one), statistics.median(three)
    warm = _warm_provisioning(WARM_RUNS)
    warm_one_s, warm_three_s = statistics.median(warm["one"]), statistics.median(warm["three"])
    spread = _across_engines()
    spread_one_s, spread_three_s = statistics.median(spread["one"]), statistics.median(spread["three"])
    notes.append(
        "- provisioning from warm nodes (regions with `warm_nodes` 1, refilled by the worker between runs), "
        f"median of {WARM_RUNS}, regions on this machine's one engine: {_runs(warm)}"
    )
    notes.append(
        "- the same on three engines (main, e2 over a unix socket, e3 over TLS with client certificates; "
        f"tests/bench/engines.py, its own installation, ordering members one per engine): {_runs(spread)}"
    )
    notes.append(
        f"- provisioning: median of 3; API → healthy one region {one_s:.2f} s, three regions {three_s:.2f} s, "
        f"raw `docker run` → healthy {raw:.2f} s; the engine work of the product's path done straight through "
        f"the SDK (its network, three member attachments, volume, secret files; `engine_floor_to_healthy`) "
        f"{floor:.2f} s, so the control plane's own share of one region is {one_s - floor:.2f} s."
    )
    return [
        Figure(
            "API → healthy node from a warm node, one region (s)",
            warm_one_s,
            "s",
            raw,
            "raw docker run → /health",
            "≤ 1.3×",
            warm_one_s / raw <= 1.3,
        ),
        Figure(
            "app on 3 regions from warm nodes (s)",
            warm_three_s,
            "s",
            warm_one_s,
            "same app on 1 region, warm",
            "≤ 1.5×",
            warm_three_s / warm_one_s <= 1.5,
        ),
        Figure(
            "app on 3 regions on 3 engines from warm nodes (s)",
            spread_three_s,
            "s",
            spread_one_s,
            "same app on 1 region of them, warm",
            "≤ 1.5×",
            spread_three_s / spread_one_s <= 1.5,
        ),
        Figure(
            "engine floor of one region's path, no control plane (s)",
            floor,
            "s",
            raw,
            "raw docker run → /health",
            "reported",
            None,
        ),
        Figure(
            "API → healthy node made on demand, one region (s)",
            one_s,
            "s",
            raw,
            "raw docker run → /health",
            "reported",
            None,
        ),
        Figure("app on 3 regions made on demand (s)", three_s, "s", one_s, "same app on 1 region", "reported", None),
        Figure(
            "3 raw docker runs at once, no control plane (s)",
            raw_three,
            "s",
            raw,
            "one raw docker run → /health",
            "reported",
            None,
        ),
    ]


def _runs(measured: dict[str, list[float]]) -> str:
    """One region's and three regions' seconds and machine CPU-seconds, each run."""

    def listed(values: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in values)

    return (
        f"API → healthy one region {statistics.median(measured['one']):.2f} s ({listed(measured['one'])}; "
        f"CPU-seconds {listed(measured['one_cpu'])}), three regions {statistics.median(measured['three']):.2f} s "
        f"({listed(measured['three'])}; CPU-seconds {listed(measured['three_cpu'])}); two cores can give "
        f"at most 2 CPU-seconds a second."
    )


def _across_engines() -> dict[str, list[float]]:
    """``tests/bench/engines.py`` in a process and database of its own (a new installation,
    whose ordering service is placed over the three engines); its seconds per run."""
    import json
    import os
    import subprocess
    import sys
    from urllib.parse import urlparse

    url = urlparse(os.environ["DATABASE_URL"])
    own = url._replace(path=f"{url.path.rstrip('/') or '/bsn_bench'}_engines").geturl()
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.engines"],
        env={**os.environ, "DATABASE_URL": own},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tests.bench.engines exited {done.returncode}: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


SPARE_USERS = 2  # etcd users made ahead (`bsn_ordering spares 2`), waited for like warm nodes


def _warm_provisioning(runs: int = 3, *, engines=None) -> dict[str, list[float]]:
    """API → healthy node where every region keeps one warm node (docs/provisioning.md,
    "Warm nodes"): one region, then three, ``runs`` times each; seconds per run under
    ``one`` and ``three``, and the CPU-seconds the whole machine spent meanwhile (every
    process: worker, nodes, engines, etcd, database, this one; ``machine_cpu_seconds``)
    under ``one_cpu`` and ``three_cpu``. Each create waits first until every region has its
    warm node again (the worker refills after a claim), so that each run claims one rather
    than measuring a region caught empty; the ordering service keeps SPARE_USERS etcd
    users made ahead, also waited for. A first app, not measured, brings the ordering
    service up; ``engines``: each region on its own engine (``tests/bench/engines.py``),
    there the first app also brings the image onto each, and a second lets the new cluster
    settle (its first leader changes cost seconds)."""
    from apps.chainapps.models import WarmNode
    from apps.chainapps.warm import warm_fill
    from apps.ordering.models import AppOrderingCredential, OrderingCluster
    from apps.ordering.services import ordering_spares_fill
    from tests.bench.suite import machine_cpu_seconds

    with bench_stack(regions=3, warm_nodes=1, engines=engines) as (regions, token):
        client = _api(token)
        codes = [r.code for r in regions]
        unmeasured = (codes, codes[:1]) if engines else (codes[:1],)  # the first brings etcd up
        for wanted in unmeasured:
            _, app = _create_and_wait(client, wanted)
            _delete(client, app)
        OrderingCluster.objects.update(spare_users=SPARE_USERS)
        ordering_spares_fill()
        for code in codes:
            warm_fill(code)

        warm = WarmNode.objects.filter(region__code__in=codes, state=WarmNode.State.READY)
        spares = AppOrderingCredential.objects.filter(app__isnull=True, provisioned_at__isnull=False)

        def all_warm() -> None:
            _until(
                lambda: warm.count() >= len(codes) and spares.count() >= SPARE_USERS,
                "the regions making their warm nodes (and etcd its spare users) again",
                timeout=120,
                interval=0.1,
            )
            time.sleep(1.0)  # the fill's engine work has ended: it does not overlap the run

        measured: dict[str, list[float]] = {"one": [], "three": [], "one_cpu": [], "three_cpu": []}
        for _ in range(runs):
            for key, wanted in (("one", codes[:1]), ("three", codes)):
                all_warm()
                cpu = machine_cpu_seconds()
                elapsed, app = _create_and_wait(client, wanted)
                measured[f"{key}_cpu"].append(machine_cpu_seconds() - cpu)
                measured[key].append(elapsed)
                _delete(client, app)
        for code in codes:  # nothing left behind
            from apps.regions.models import Region

            Region.objects.filter(code=code).update(warm_nodes=0)
            warm_fill(code)
    return measured


def memory(engine, notes: list[str]) -> list[Figure]:
    """Idle memory of one ledger node container (and of one ordering member if running)."""
    from tests.bench.suite import hardened_ledger, memory_used, wait_http

    with hardened_ledger(engine, settings.BSN_LEDGER_IMAGE) as (container, url):
        wait_http(f"{url}/health", 30)
        time.sleep(2)
        counted, own = memory_used(container)
    mib = own / 2**20
    figures = [Figure("idle ledger node memory, bare `docker run` (solo)", mib, "MiB", None, "", "≤ 20 MiB", mib <= 20)]
    notes.append(f"- bare idle node: {own / 2**20:.1f} MiB own, {counted / 2**20:.1f} MiB as docker stats counts it")
    members = engine.containers.list(filters={"label": "io.bsn.role=ordering"})
    if members:
        counted, own = memory_used(members[0])
        figures.append(
            Figure(
                "ordering member memory (etcd), after the tx benchmark", own / 2**20, "MiB", None, "", "reported", None
            )
        )
        notes.append(
            f"- ordering member after the tx benchmark: {own / 2**20:.1f} MiB own, "
            f"{counted / 2**20:.1f} MiB as docker stats counts it"
        )
    else:
        notes.append("- no ordering member was running to measure")
    return figures


def _signed_puts(app_id: str, user: str, private_key: str, count: int) -> list[dict]:
    from bsn.ledger.tx import make_tx, sign_tx

    return [
        sign_tx(make_tx(app_id, "kv", "put", {"key": f"k{i % 1000}", "value": i}, user), private_key)
        for i in range(count)
    ]


def _tx_rate(
    client,
    regions: list[str],
    *,
    count: int,
    batch: int,
    threads: int,
    notes: list[str],
    idle_memory: list | None = None,
) -> float:
    """Committed signed transactions per second on a fresh app, batches posted to its nodes.

    ``idle_memory``: append the memory of the app's first node, idle, before the load."""
    from concurrent.futures import ThreadPoolExecutor

    from bsn.ledger.crypto import generate_private_key, public_key_of

    _, app_id = _create_and_wait(client, regions)
    try:
        private = generate_private_key()
        resp = client.post(
            f"/api/v1/apps/{app_id}/users", {"name": "bench", "public_key": public_key_of(private)}, format="json"
        )
        assert resp.status_code == 201, resp.content
        nodes = client.get(f"/api/v1/apps/{app_id}/nodes").json()["results"]
        # Tenants do not see endpoints; the bench calls the nodes as the gateway does:
        # signed with each node's credential, replies checked (docs/ledger-protocol.md).
        from apps.chainapps.models import LedgerNode
        from apps.chainapps.node_auth import node_auth
        from apps.runtime.nodeapi import node_call

        rows = LedgerNode.objects.filter(pk__in=[n["id"] for n in nodes]).order_by("region__code")
        targets = [(row.endpoint, node_auth(row)) for row in rows]
        if idle_memory is not None:
            from tests.bench.suite import memory_used

            time.sleep(3)  # idle: elected, user added, nothing to order
            counted, own = memory_used(_node_container(nodes[0]["name"]))
            idle_memory.append(own)
            notes.append(
                f"- idle node of an etcd-ordered app: {own / 2**20:.1f} MiB own, "
                f"{counted / 2**20:.1f} MiB as docker stats counts it"
            )
        envelopes = _signed_puts(app_id, "bench", private, count)
        chunks = [envelopes[i : i + batch] for i in range(0, len(envelopes), batch)]

        def post(index_chunk):
            index, chunk = index_chunk
            endpoint, auth = targets[index % len(targets)]
            body = node_call(endpoint, "POST", "/tx/batch", auth=auth, body={"txs": chunk}, read_timeout=120).body
            return sum(1 for r in body["receipts"] if r.get("status") == "committed")

        first = _node_container(nodes[0]["name"])
        cpu_before = _cpu_stats(first)
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            committed = sum(pool.map(post, enumerate(chunks)))
        elapsed = time.perf_counter() - start
        cpu_after = _cpu_stats(first)
        used = (cpu_after[0] - cpu_before[0]) / 1e9  # seconds of CPU
        notes.append(
            f"- {len(regions)}-node app: {committed}/{count} committed in {elapsed:.2f} s "
            f"(batches of {batch}, {threads} client threads, posted round-robin to the nodes); its first node "
            f"used {used / elapsed:.2f} cores, {used / max(committed, 1) * 1e6:.0f} µs of CPU a transaction, and was "
            f"held at its CPU limit in {cpu_after[1] - cpu_before[1]} of {cpu_after[2] - cpu_before[2]} periods"
        )
        return committed / elapsed
    finally:
        _delete(client, app_id)


def _node_container(name: str):
    import docker

    return docker.DockerClient(base_url=settings.BSN_DOCKER_BASE_URL).containers.get(name)


def _cpu_stats(container) -> tuple[int, int, int]:
    """(CPU ns used, periods throttled, periods) of a container, read once (no stream)."""
    stats = container.stats(stream=False, one_shot=True)["cpu_stats"]
    throttling = stats.get("throttling_data") or {}
    return (
        int(stats["cpu_usage"]["total_usage"]),
        int(throttling.get("throttled_periods", 0)),
        int(throttling.get("periods", 0)),
    )


def ledger_throughput(engine, notes: list[str]) -> list[Figure]:
    from tests.bench.suite import ed25519_verifications_per_second, python_node_floor

    with bench_stack(regions=3) as (regions, token):
        client = _api(token)
        codes = [r.code for r in regions]
        idle: list[int] = []
        # The reference is measured right before and right after the one-node run and
        # averaged: this shared machine's speed drifts by a fifth within minutes.
        # One core's Ed25519 verifications: the faster of OpenSSL (cryptography) and libsodium
        # (PyNaCl), each measured right before and right after the one-node run. It was
        # OpenSSL's alone until 3 December, when cryptography 50 (OpenSSL 4.0.3) verified at
        # 4,555/s where the earlier build did about 11,500/s: the reference fell by half and
        # an unchanged node "met" the goal. The fastest library is the honest reference.
        openssl_before = ed25519_verifications_per_second()
        sodium_before = ed25519_verifications_per_second(library="libsodium")
        one = _tx_rate(client, codes[:1], count=20_000, batch=500, threads=2, notes=notes, idle_memory=idle)
        openssl_after = ed25519_verifications_per_second()
        sodium = ed25519_verifications_per_second(library="libsodium")
        before, after = max(openssl_before, sodium_before), max(openssl_after, sodium)
        openssl = (openssl_before + openssl_after) / 2
        floor_without, floor_with = python_node_floor()
        three = _tx_rate(client, codes, count=20_000, batch=500, threads=3, notes=notes)
    reference = (before + after) / 2
    ceiling = 1e6 / floor_with
    notes.append(
        f"- a Python node's floor (tests/bench/suite.py `python_node_floor`, one core, batches of 500): "
        f"{floor_without:.1f} µs a transaction besides verification, {floor_with:.1f} µs with it; so at most "
        f"{ceiling:,.0f} tx/s = {ceiling / reference:.2f}× the reference ({1 - floor_without / floor_with:.2f}× "
        f"of the verifications inside the floor's own run)"
    )
    notes.append(
        f"- raw Ed25519 verifications on one core, the faster library (the reference): {reference:,.0f}/s "
        f"({before:,.0f} before the one-node run, {after:,.0f} after); cryptography/OpenSSL {openssl:,.0f}/s, "
        f"PyNaCl/libsodium {sodium:,.0f}/s (the node asks libsodium first); against OpenSSL alone the one-node "
        f"figure would be {one / openssl:.2f}×"
    )
    return [
        Figure(
            "signed tx/s, one node",
            one,
            "tx/s",
            reference,
            "Ed25519 verifications/s, one core (faster library)",
            "≥ 0.8×",
            one / reference >= 0.8,
        ),
        Figure(
            "ceiling of a Python node on one core (its floor, no HTTP/ordering)",
            ceiling,
            "tx/s",
            reference,
            "Ed25519 verifications/s, one core (faster library)",
            "reported",
            None,
        ),
        Figure(
            "signed tx/s, 3-node app (etcd ordering)",
            three,
            "tx/s",
            one,
            "same, one node",
            "≥ 0.5×",
            three / one >= 0.5,
        ),
        Figure(
            "idle ledger node memory, node of an etcd-ordered app",
            idle[0] / 2**20,
            "MiB",
            None,
            "",
            "≤ 20 MiB",
            idle[0] / 2**20 <= 20,
        ),
    ]


def node_state(engine, notes: list[str]) -> list[Figure]:
    """A node's memory with 1 GB of state in its 64 MiB container (tests/runtime/fill_ledger_state.py)."""
    from tests.runtime.fill_ledger_state import measure

    r = measure(engine, settings.BSN_LEDGER_IMAGE, 1024, say=lambda line: notes.append(f"  - {line.strip()}"))
    mib = 2**20
    peak, idle = r["peak_sampled"], r["idle_after_restart"]
    notes.insert(
        0,
        f"- 1 GB of kv values (200 KB each, {r['height']} blocks, batches of 9) posted to one solo node in a "
        f"64 MiB container (no swap) in {r['fill_s']} s; OOM-killed: {r['oom_killed']}, restarts: "
        f"{r['restarts']}; restarted on it, it answered /chain after {r['restart_to_chain_s']} s with the same "
        f"state root: {r['same_root_after_restart']}. Data dir (KiB): {r['data_kib']}. Sampled every 64 MiB:",
    )
    return [
        Figure(
            "node with 1 GB of state: own memory, peak sampled",
            peak["anon"] / mib,
            "MiB",
            None,
            "",
            "< 64 MiB",
            peak["anon"] < 64 * mib and not r["oom_killed"],
        ),
        Figure(
            "node with 1 GB of state: as `docker stats` counts it, peak sampled",
            peak["stats"] / mib,
            "MiB",
            None,
            "",
            "< 64 MiB",
            peak["stats"] < 64 * mib,
        ),
        Figure(
            "node with 1 GB of state: idle after a restart, own memory",
            idle["anon"] / mib,
            "MiB",
            None,
            "",
            "≤ 20 MiB",
            idle["anon"] <= 20 * mib,
        ),
        Figure(
            "node with 1 GB of state: idle after a restart, as `docker stats` counts it",
            idle["stats"] / mib,
            "MiB",
            None,
            "",
            "≤ 20 MiB",
            idle["stats"] <= 20 * mib,
        ),
    ]


def dcep(engine, notes: list[str]) -> list[Figure]:
    """DCEP payments, batches, settlement and the embedded default against pgbench (tests/bench/dcep.py)."""
    from tests.bench.dcep import dcep as measure

    return measure(engine=engine, notes=notes)


def healing(engine, notes: list[str]) -> list[Figure]:
    """A node container removed behind the platform's back (`docker rm -f`): seconds until
    it answers as itself again, healed from the engine's events (issue 9); median of 10."""
    from apps.chainapps.models import LedgerNode
    from apps.chainapps.node_auth import node_auth
    from apps.runtime.nodeapi import node_call

    times: list[float] = []
    with bench_stack(regions=1) as (regions, token):
        client = _api(token)
        _, app_id = _create_and_wait(client, [regions[0].code])
        try:
            node = LedgerNode.objects.get(app_id=app_id)
            for _ in range(10):
                before = engine.containers.get(node.name).attrs["State"]["StartedAt"]
                start = time.perf_counter()
                engine.containers.get(node.name).remove(force=True)
                deadline = start + 60
                while time.perf_counter() < deadline:
                    try:
                        node.refresh_from_db()
                        fresh = engine.containers.get(node.name).attrs["State"]["StartedAt"] != before
                        reply = node_call(node.endpoint, "GET", "/health", auth=node_auth(node), read_timeout=1)
                        if fresh and reply.body.get("node_id") == str(node.pk):
                            break
                    except Exception:  # noqa: BLE001, S110 - not back yet (container, database or node)
                        pass
                    time.sleep(0.05)
                else:
                    raise AssertionError("a removed node did not come back within 60 s")
                times.append(time.perf_counter() - start)
                time.sleep(1)  # let the database catch up before the next round
        finally:
            _delete(client, app_id)
    median = statistics.median(times)
    notes.append(
        "- healing: `docker rm -f` of a one-node app's node container, then until it answers `/health` as "
        f"itself again (engine event → worker → ensure → verified): {', '.join(f'{t:.2f}' for t in times)} s."
    )
    return [Figure("removed node verified again (s), median of 10", median, "s", None, "", "≤ 5 s", median <= 5)]


def reconcile200(engine, notes: list[str]) -> list[Figure]:
    """A reconcile pass over one Docker region of 200 running nodes, and their idle memory
    (tests/bench/region200.py)."""
    from tests.bench.region200 import reconcile200 as measure

    return measure(engine=engine, notes=notes)


def swarm(engine, notes: list[str]) -> list[Figure]:
    """API → healthy node on a Swarm region vs a raw `docker service create` (tests/bench/swarm.py)."""
    from tests.bench.swarm import swarm as measure

    return measure(engine=engine, notes=notes)


ALL = [
    ("ledger", ledger_throughput),
    ("memory", memory),
    ("provisioning", provisioning),
    ("healing", healing),
    ("dcep", dcep),
    ("nodestate", node_state),
    ("reconcile200", reconcile200),
    ("swarm", swarm),
]

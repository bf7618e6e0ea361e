"""The benchmark figures. Each returns (value, reference, ratio, goal text)."""

from __future__ import annotations

import os
import platform
import statistics
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from django.conf import settings
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "benchmarks.md"


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    reference: float | None
    reference_name: str
    goal: str
    ok: bool | None

    @property
    def ratio(self) -> float | None:
        return None if not self.reference else self.value / self.reference


def ed25519_verifications_per_second(seconds: float = 2.0, *, library: str = "openssl") -> float:
    """Reference: raw Ed25519 verifications per second on one core, with cryptography
    (OpenSSL, the goal's reference) or PyNaCl (libsodium, what the node asks first)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.generate()
    message = b'{"app":"x","args":{"key":"k","value":1},"contract":"kv"}'
    signature = key.sign(message)
    public = key.public_key()
    if library == "libsodium":
        from nacl.bindings import crypto_sign_open

        raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        signed = signature + message

        def verify() -> None:
            crypto_sign_open(signed, raw)
    else:

        def verify() -> None:
            public.verify(signature, message)

    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds and count < 2_000_000:
        for _ in range(200):
            verify()
        count += 200
    return count / (time.perf_counter() - start)


def python_node_floor(count: int = 20_000, batch: int = 500) -> tuple[float, float]:
    """(µs per transaction without verification, with it): the least a Python node must do
    for each signed ``kv`` put, measured on one core in this process.

    Written by hand on purpose: it is not the node but its lower bound. Each step is done
    the cheapest way the standard library allows (C json, sqlite3 ``executemany``, hashlib),
    a batch at a time, one thread, no HTTP, no ordering, no locks, no replay check beyond
    the unique index: parse the batch, re-encode each transaction canonically (the signed
    bytes), verify with libsodium, hash it (its id), one transaction row and one state row
    per batch in one SQLite commit, a Merkle-style hash over the ids, the receipts' JSON.
    The real node does all of this and more (docs/benchmarks.md, "A Python node's floor").
    """
    import base64
    import hashlib
    import json
    import sqlite3
    import tempfile

    from nacl.bindings import crypto_sign, crypto_sign_keypair, crypto_sign_open

    public, secret = crypto_sign_keypair()
    encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode

    def envelope(i: int) -> dict:
        tx = {
            "app": "0" * 36,
            "args": {"key": f"k{i % 1000}", "value": i},
            "contract": "kv",
            "function": "put",
            "nonce": f"{i:032x}",
            "signer": "bench",
            "ts": 1_700_000_000_000 + i,
        }
        signature = crypto_sign(encode(tx).encode(), secret)[:64]
        return {"tx": tx, "sig": base64.b64encode(signature).decode()}

    bodies = [
        json.dumps({"txs": [envelope(i) for i in range(start, start + batch)]}).encode()
        for start in range(0, count, batch)
    ]
    with tempfile.TemporaryDirectory() as scratch:
        db = sqlite3.connect(f"{scratch}/state.db", isolation_level=None)
        db.execute("pragma journal_mode=wal")
        db.execute("pragma synchronous=normal")
        db.execute("create table kv (k text primary key, v text, tx text)")
        db.execute("create table txs (id text primary key, signer text, nonce text, unique (signer, nonce))")

        def run(verify: bool) -> float:
            db.execute("delete from txs")
            start = time.perf_counter()
            for body in bodies:
                rows, state, ids, receipts = [], {}, [], []
                for env in json.loads(body)["txs"]:
                    tx = env["tx"]
                    signed = encode(tx).encode()
                    if verify:
                        crypto_sign_open(base64.b64decode(env["sig"]) + signed, public)
                    digest = hashlib.sha256(signed).digest()
                    tx_id = digest.hex()
                    rows.append((tx_id, tx["signer"], tx["nonce"]))
                    state[tx["args"]["key"]] = (json.dumps(tx["args"]["value"]), tx_id)
                    ids.append(digest)
                    receipts.append({"tx_id": tx_id, "status": "committed"})
                db.execute("begin")
                db.executemany("insert into txs values (?, ?, ?)", rows)
                db.executemany("insert or replace into kv values (?, ?, ?)", [(k, *v) for k, v in state.items()])
                db.execute("commit")
                hashlib.sha256(b"".join(ids)).digest()
                json.dumps({"receipts": receipts})
            return (time.perf_counter() - start) / count * 1e6

        without, with_ = run(False), run(True)
        db.close()
    return without, with_


def machine_cpu_seconds() -> float:
    """CPU-seconds the whole machine has spent (every process and the kernel; not idle or
    waiting for I/O), from /proc/stat: the difference over a run says how busy it kept the
    cores, so whether a figure is bound by CPU on this machine."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal, less idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, timeout: float) -> float:
    start = time.perf_counter()
    deadline = start + timeout
    while time.perf_counter() < deadline:
        try:
            if requests.get(url, timeout=0.5).status_code == 200:
                return time.perf_counter() - start
        except requests.RequestException:
            pass
        time.sleep(0.01)
    raise TimeoutError(url)


# The raw runs' container settings: the product's hardening, the port on loopback.
RAW_HARDENING = {
    "read_only": True,
    "tmpfs": {"/tmp": "size=16m"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
    "user": "10001:10001",
    "init": True,
    "ports": {"8080/tcp": ("127.0.0.1", None)},
    "labels": {"io.bsn.bench": "1"},
}


@contextmanager
def hardened_ledger(engine, image: str, **extra):
    """A bare `docker run` of the ledger image with the product's hardening; yields (container, url).

    Used as the reference (no control plane) and to read an idle node's memory.
    """
    container = engine.containers.run(image, detach=True, **RAW_HARDENING, **extra)
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        yield container, f"http://127.0.0.1:{port}"
    finally:
        container.remove(force=True, v=True)


def memory_used(container) -> tuple[int, int]:
    """(as `docker stats` counts it, the processes' own anonymous memory), in bytes.

    `docker stats` shows usage minus inactive file pages, which includes whatever page
    cache this container happened to charge first (the shared Python and OpenSSL
    libraries of the image, say), so it moves by a few MiB from run to run. The anonymous
    memory (heap, stacks) is the node's own and what each further node adds.
    """
    stats = container.stats(stream=False)["memory_stats"]
    detail = stats.get("stats", {})
    inactive = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    own = detail.get("anon", detail.get("total_rss", detail.get("rss", 0)))  # cgroup v2, v1
    return stats["usage"] - inactive, own


def raw_docker_run_to_healthy(engine, image: str, runs: int = 3) -> float:
    """Reference: `docker run` of the ledger image with the same hardening + first healthy /health."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        with hardened_ledger(engine, image, name=f"bsn-bench-raw-{uuid.uuid4().hex[:8]}", mem_limit="64m") as (_, url):
            wait_http(f"{url}/health", 30)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def raw_docker_runs_at_once(engine, image: str, count: int = 3, runs: int = 3) -> float:
    """``count`` raw `docker run`s of the ledger image started at once, to the last first
    healthy /health (median of ``runs``): how the engine and the machine take parallel starts
    (the three-region figure's counterpart without a control plane)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> None:
        with hardened_ledger(engine, image, name=f"bsn-bench-raw-{uuid.uuid4().hex[:8]}", mem_limit="64m") as (
            _container,
            url,
        ):
            wait_http(f"{url}/health", 30)
            done.append(time.perf_counter())

    times = []
    for _ in range(runs):
        done: list[float] = []
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(one, range(count)))
        times.append(max(done) - start)
    return statistics.median(times)


def engine_floor_to_healthy(engine, image: str, runs: int = 3) -> float:
    """The engine work one provisioned node of an etcd app needs beyond the raw run, done
    straight through the Docker SDK with no control plane: the raw run's container and
    hardening, plus what the product must do for it (DESIGN.md §4-5) -- its app's own
    network, three ordering members attached to that network (beside the create and start,
    as provisioning does; three idle stand-in containers here), its volume, its secret files
    copied in (``put_archive``, three small files), then the first `/health`.

    Written by hand on purpose: it is not the product but the least engine work the
    product's path can do; the provisioning figure minus this is the control plane's share."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    import docker.errors

    from apps.runtime.docker import secrets_archive

    # The product's own archive builder, which reads only the user and the secrets of a spec.
    secrets = {name: uuid.uuid4().hex for name in ("BSN_NODE_PRIVATE_KEY", "BSN_API_CREDENTIAL", "BSN_ETCD_PASSWORD")}
    archive = secrets_archive(SimpleNamespace(user=RAW_HARDENING["user"], secrets=secrets))
    tag = uuid.uuid4().hex[:8]
    members = [
        engine.containers.run(
            image,
            command=["python3", "-c", "import time; time.sleep(900)"],
            name=f"bsn-bench-member-{tag}-{index}",
            labels={"io.bsn.bench": "1"},
            detach=True,
        )
        for index in range(3)
    ]
    times = []
    try:
        for _ in range(runs):
            run = uuid.uuid4().hex[:8]
            start = time.perf_counter()
            network = engine.networks.create(f"bsn-bench-floor-{run}", driver="bridge", labels={"io.bsn.bench": "1"})
            container = None
            try:
                with ThreadPoolExecutor(max_workers=3) as pool:
                    attaching = [pool.submit(network.connect, member) for member in members]
                    container = engine.containers.create(
                        image,
                        name=f"bsn-bench-floor-{run}",
                        **RAW_HARDENING,
                        mem_limit="64m",
                        network=network.id,
                        volumes={f"bsn-bench-floor-{run}": {"bind": "/data", "mode": "rw"}},
                    )
                    container.put_archive("/data", archive)
                    container.start()
                    for future in attaching:
                        future.result()
                container.reload()
                port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
                wait_http(f"http://127.0.0.1:{port}/health", 30)
                times.append(time.perf_counter() - start)
            finally:
                if container is not None:
                    container.remove(force=True, v=True)
                    engine.volumes.get(f"bsn-bench-floor-{run}").remove(force=True)  # named: v=True keeps it
                for member in members:
                    with contextlib.suppress(docker.errors.APIError):  # not attached: its connect failed
                        network.disconnect(member, force=True)
                network.remove()
    finally:
        for member in members:
            member.remove(force=True)
    return statistics.median(times)


# Sections of docs/benchmarks.md, each regenerated only by a run that measured it (a run of
# `make bench BENCH=dcep` keeps the other sections as they were).
SECTIONS = {
    # One section a group of figures that run together: a run of some groups rewrites only
    # theirs (one section for ledger, memory and provisioning lost the ledger rows to a
    # `BENCH=provisioning` run on 2 December).
    "ledger": ("Ledger nodes: transactions and memory", ("ledger", "memory")),
    "provisioning": ("Provisioning", ("provisioning",)),
    "healing": ("Healing from engine events", ("healing",)),
    "dcep": ("DCEP (digital currency) against pgbench", ("dcep",)),
    "nodestate": ("A ledger node with 1 GB of state", ("nodestate",)),
    "reconcile200": ("A region of 200 nodes: reconcile pass and idle memory", ("reconcile200",)),
    "swarm": ("A Swarm region", ("swarm",)),
}
INTRO = [
    "# Benchmarks",
    "",
    "Produced by `make bench` (tests/bench). Every figure is measured against a reference in the",
    "same run on the same machine; loops are bounded and talk to loopback only. `make bench",
    "BENCH=<name>` runs some figures only (ledger, memory, provisioning, healing, dcep, nodestate,",
    "reconcile200, swarm; with the other groups of their section) and regenerates their section; the",
    "other sections are kept from the earlier run that measured them.",
]


def section_of(group: str) -> str:
    return next(name for name, (_, groups) in SECTIONS.items() if group in groups)


def _existing_sections(text: str) -> dict[str, str]:
    found = {}
    for name in SECTIONS:
        start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        if start in text and end in text:
            found[name] = text[text.index(start) : text.index(end) + len(end)]
    return found


def _render_section(name: str, figures: list[Figure], notes: list[str], analysis: list[str]) -> str:
    lines = [
        f"<!-- bench:{name} -->",
        f"## {SECTIONS[name][0]}",
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores, "
        f"run at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| figure | value | reference (same run) | ratio | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        ref = f"{f.reference:.3g} ({f.reference_name})" if f.reference else f.reference_name or "—"
        ratio = f"{f.ratio:.2f}×" if f.ratio is not None else "—"
        met = {True: "yes", False: "**no**", None: "—"}[f.ok]
        lines.append(f"| {f.name} | {f.value:.3g} {f.unit} | {ref} | {ratio} | {f.goal} | {met} |")
    lines += ["", "### Details", "", *notes, "", *analysis, f"<!-- /bench:{name} -->"]
    return "\n".join(lines)


def write_results(measured: dict[str, tuple[list[Figure], list[str]]]) -> None:
    """Regenerate the sections in ``measured`` ({section: (figures, notes)}), keep the others."""
    from tests.bench import dcep, region200, swarm

    analysis = {
        "ledger": LEDGER_ANALYSIS,
        "provisioning": PROVISIONING_ANALYSIS,
        "healing": HEALING_ANALYSIS,
        "dcep": dcep.ANALYSIS,
        "nodestate": NODESTATE_ANALYSIS,
        "reconcile200": region200.ANALYSIS,
        "swarm": swarm.ANALYSIS,
    }
    kept = _existing_sections(RESULTS.read_text()) if RESULTS.exists() else {}
    blocks = []
    for name in SECTIONS:
        if name in measured:
            blocks.append(_render_section(name, *measured[name], analysis[name]))
        elif name in kept:
            blocks.append(kept[name])
    RESULTS.write_text("\n".join(INTRO) + "\n\n" + "\n\n".join(blocks) + "\n")


HEALING_ANALYSIS = [
    "### Reading the figures",
    "",
    "- Every worker watches the engine events of the regions whose queues it consumes",
    "  (apps/chainapps/healing.py); a ledger container of this installation that dies or is",
    "  destroyed is started again by the worker at once when its app is meant to run and no",
    "  operation of the app is open, and counts as back once it answers `/health` as itself",
    "  (signed request, reply MAC, identity proof). The periodic reconcile pass (every",
    "  `BSN_RECONCILE_INTERVAL` s) stays the backstop; before events it was the only way back,",
    "  26 s measured from outside (issue 9).",
]

LEDGER_ANALYSIS = [
    "### Reading the figures",
    "",
    "- Everything shares two cores: the client (pre-signed envelopes, JSON encoding), the ledger",
    "  node(s), the three etcd members (Raft + fsync for every pending batch and every block),",
    "  PostgreSQL and the control plane. The Ed25519 reference runs alone on an idle core.",
    "- Memory figures are each container's own anonymous memory (heap, stacks: what one more node",
    "  adds); the notes also give what `docker stats` shows, which adds the page cache the container",
    "  happened to charge first (shared libraries of the image) and moved between 16 and 21 MiB.",
    "- A ledger node may use one core (the built-in framework's `default_cpus`; it was half a core,",
    "  which alone capped the one-node figure below 0.5×, since verification is most of the work).",
    "- A one-node app on the Docker driver is ordered by the etcd service like any other app, so its",
    "  figure includes the ordering round trips (key listing, CAS commit of the block, watch). The",
    "  proposer orders what it receives itself from memory (issue 8, 2 December): only other nodes'",
    "  submissions go through `P/pending`, which halved the etcd members' CPU per transaction",
    "  (about 125 µs for the three together before, 65-75 µs after, one-node app).",
    "- The reference (3 December): the faster of OpenSSL and libsodium on one core. It was",
    "  OpenSSL's alone; the virtualenv's cryptography is now 50.0.2 with OpenSSL 4.0.3, which",
    "  verified 4,555-5,660/s here where the build of 2 December did about 11,500/s, while",
    "  libsodium did 9,350-13,900/s: against OpenSSL alone an unchanged node read 1.05x. Against",
    "  the faster library the one-node figure is 0.34-0.43x (4,210-4,790 tx/s); the same node did",
    "  5,660-6,620 tx/s on 2 December, and libsodium itself is slower on this machine today",
    "  (a different VM build: kernel fc-v1045, was fc-v857), so the node did not get slower",
    "  relative to its verifier. The goal of 0.8x is not met.",
    "- Speed work of 2 December (issue 8): the node asks libsodium (PyNaCl) first to check a",
    "  signature, about 1.6× as fast as OpenSSL here, with OpenSSL keeping the final word on what",
    "  libsodium refuses (bsn/ledger/crypto.py); one state row per transaction (its receipt stored",
    "  only when it is not the plain committed one); batch admission takes the core's lock twice",
    "  per batch and asks the database once per batch when a block landed meanwhile (it asked",
    "  twice per transaction); the C JSON encoder is made once; pair keys and digests are computed",
    "  once per transaction; the batch reply is composed from each receipt's JSON. Same bench",
    "  (`make bench BENCH=ledger`, the reference measured around the run): 3,820-4,040 tx/s =",
    "  0.26-0.32× before, 5,660-6,620 tx/s = 0.49-0.58× after. The goal of 0.8× is not met.",
    "- Where a node's CPU goes now (perf on the node container, one-node app, 40,000 tx): about",
    "  170 µs a transaction, of which libsodium 35%, the Python interpreter 31%, the kernel 16%",
    "  (thread switches and wake-ups: handler threads, proposer, watch), SQLite 8%, libc 6%, the",
    "  JSON scanner 3%. In-process, single-threaded (no HTTP, no etcd) the node's work other than",
    "  verification is about 283,000 instructions a transaction (callgrind), 45-55 µs: SQLite",
    "  inserts ~15 µs (two random b-tree keys per transaction, tx_id and (signer, nonce), ~8 µs;",
    "  the kv history row ~5 µs), parsing and canonical re-encoding ~10 µs, the rest per-",
    "  transaction Python. What the threaded HTTP/etcd path adds on top (~40 µs) is the largest",
    "  remaining item.",
    "- A Python node's ceiling (3 December, the `ceiling` row): `python_node_floor` does the least a",
    "  node must do for each signed put -- parse the batch, re-encode each transaction canonically,",
    "  verify it with libsodium, hash it, one transaction row and one state row in one SQLite commit",
    "  per batch, the receipts' JSON -- each step the cheapest way the standard library allows, one",
    "  thread, no HTTP, no ordering, no locks. Besides verification it costs 36-38 µs a transaction",
    "  (three runs). The 0.8× goal allows a node 1.25 verifications' time per transaction, that is",
    "  24 µs besides a verification at the reference's 96 µs (10,400/s): the floor alone is half as",
    "  much again, so even with every verification as fast as the reference's tight loop (one",
    "  signature checked over and over; the floor's 500 different ones measured slower, 130-136 µs,",
    "  partly this shared machine's drift) a Python node on one core tops out at 96 / (96 + 37) =",
    "  0.72× before any HTTP, ordering or durability; measured in the run, 0.56×. The 0.8× goal",
    "  of issue 8 therefore needs the per-transaction path compiled (DESIGN.md §5: the node is",
    "  plain Python), a batch verifier (none of the bindings on PyPI has one: PyNaCl, cryptography,",
    "  py-ed25519-zebra-bindings verify one signature a call),",
    "  or more than one core per node (the node is held at its one-core limit: the notes above give",
    "  its CPU a transaction and the periods it was throttled). DESIGN.md §9's goal for this figure",
    "  is 0.5×.",
    "- Every node verifies every signature once (at precheck for what it received, when applying",
    "  a block for the rest), so a 3-node app does three verifications per transaction; on two",
    "  shared cores that bounds it (0.53–0.74× the one-node figure over five runs here). Each node",
    "  does the same work as the one node, so with a core per node it should approach 1× (not",
    "  measured: this machine has two cores).",
]


PROVISIONING_ANALYSIS = [
    "### Reading the figures",
    "",
    '- The goal rows are measured from warm nodes (docs/provisioning.md, "Warm nodes"): each',
    "  region keeps one ledger container started ahead, its network made with the ordering",
    "  members attached, its volume and host port, the node program loaded and listening for",
    "  its claim. The create request claims one per region (database only); the node step hands",
    "  the node its settings and secret files in one `POST /claim` on its port, sealed with the",
    "  warm node's claim key, and the node serves within milliseconds. One region, 5 December",
    "  (the table): 0.115 s = 0.36× its raw run (goal 1.3×: met); 0.12-0.18 s in earlier runs.",
    "- What the claim over HTTP replaced (4 December): the node step copied the claim into the",
    "  container through the engine (`put_archive`), an archive extraction that cost the engine",
    "  ~40 ms of CPU and as long on the request's path. The copy stays the way back when the",
    "  HTTP claim gets no answer (tried twice when the connection is reset before one) or an",
    "  answer other than `200` or `409` (taken already). The ordering check's fast path holds",
    "  for two reconcile intervals (`ensure_fresh()`), so creates skip the locked full check.",
    "- What a warm node step stopped doing (5 December): it read the database 48 times and the",
    "  engine 7 times; now about 28 and 3. The installation id once per step (it was read",
    "  three times), the app's other nodes once per node (three), the step's taken mark and its",
    "  `ensuring node` line in one write of the operation row, no member count beside the",
    "  member list; the parallel steps of one create share a member status check under way",
    "  (single flight: never an answer older than the call). The Docker driver reads the",
    "  container first and ensures network and volume only when it makes or starts one, does",
    "  not read it again after a claim over HTTP, and an attach that finds the member on the",
    "  network already does not look the network up. On three engines, five runs each: one",
    "  region 0.167 → 0.125-0.13 s, three regions 0.298 → 0.22-0.23 s, the machine's CPU during",
    "  a three-region create 0.59 → 0.40-0.43 CPU-seconds.",
    "- Later on 5 December: an app's nodes stagger their first campaign for proposer by rank",
    "  (`BSN_ETCD_CAMPAIGN_DELAY_MS`, docs/ordering.md): three nodes starting together granted",
    "  three leases, tried three proposer txns and revoked two, six writes on every member for",
    "  one campaign's work; now one lease is granted. A warm node standing by sleeps until a",
    "  connection comes instead of polling (11 → ~4 ms of CPU a second per idle warm node).",
    "  On three engines, five runs by hand: one region 0.116 s, three regions 0.197 s = 1.70×",
    "  (0.122 / 0.230 s = 1.89× in the run just before, with the stagger alone: the spread",
    "  between runs of five is as large as the change); the bench run in the table 0.149 / 0.245 s = 1.64×.",
    "- Later on 5 December (the run in the table): a step reads what it asks for several times once",
    "  (`work_scope`: the installation id, the ordering members and cluster row), the app's etcd",
    "  user is made by the create's begin task while the steps travel (the steps of a new app no",
    "  longer queue on the app's row behind the first), a just-configured node is verified",
    "  without reading its row again: a three-region create's node steps went from 77 to 63",
    "  database statements (counted in one process, the etcd user made by a step there). The",
    "  bench now waits on the operation's row, not by API polls (the",
    "  figure is `finished_at`, recorded by the worker, either way) and takes five runs of each",
    "  shape: with three, one slow run moved a median (1.56 s beside 0.31 s gave 1.39× in the",
    "  run just before). No change of the ratio shows; this machine measured slower in these",
    "  runs (raw `docker run` 0.37-0.40 s against 0.29 s in the morning's).",
    "- 5 December, afternoon (the run in the table): etcd does no more per node than the create",
    "  needs. A claimed node starts with one token of the app's etcd user, got once for all the",
    "  nodes the create claims (each authenticated itself: a Raft write on every member per",
    "  node), and reads what its watch needs in one read-only transaction (four linearizable",
    "  reads before, each a round of the members); the app's user is made in two rounds of",
    "  writes instead of five calls in a row, or, where the ordering service keeps spare users",
    "  made ahead (`bsn_ordering spares N`; the bench keeps two, waited for like warm nodes),",
    "  taken with one database update: no etcd call on the create's way. etcd's own counters: a",
    "  three-region create now makes as many Raft proposals as a one-region one (8; before,",
    "  10). By process (/proc, seven runs each on three engines), what one more node costs:",
    "  the worker's step ~0.026 CPU-s, the claimed node ~0.014, the database ~0.006, etcd",
    "  ~0.002 (was ~0.02). One region 0.125-0.13 → 0.11-0.13 s, three regions 0.20-0.23 →",
    "  0.185-0.20 s: both faster, the ratio about as before (1.47-1.67× in nine-run sets by",
    "  hand, 1.56× in the table).",
    "- Three regions, goal 1.5× one region: not met. On three engines (`tests/bench/engines.py`:",
    "  main, e2 on its own socket, e3 over TLS with client certificates; the production shape,",
    "  where regions are separate engines) 1.56× in the table (0.199 / 0.127 s, five runs each);",
    "  1.47-1.67× in sets of nine runs by hand the same day. On this machine's one engine",
    "  3.3× (a three-node app on one engine also makes its internal peer network and joins",
    "  three running containers to it, engine work the engine does one at a time).",
    "- Why: both creates are bound by this machine's two cores, so the ratio is the ratio of",
    "  their CPU. In the morning's runs one region spent 0.33-0.37 CPU-seconds in 0.17 s, three",
    "  regions 0.56-0.58 in 0.32 s (`machine_cpu_seconds`, /proc/stat): a fixed part",
    "  F ≈ 0.22 CPU-s per create and N ≈ 0.115 CPU-s per node; (F + 3N) / (F + N) ≤ 1.5 needs",
    "  N ≤ F/3. The afternoon's changes took etcd's part of N away (N ≈ 0.06 now) but also",
    "  shortened the fixed part (the app's etcd user off the create's path), and every cut so",
    "  far cut one region's time nearly as much as three's. Tried and not kept: a shorter GIL",
    "  switch interval in the worker (0.5 ms: 1.70-1.72×, worse), and again a worker per region's queue",
    "  (production runs them so): three regions unchanged at 0.23 s, one region slower (0.125 →",
    "  0.145 s: the begin task and the step in two processes, one more broker hop), 1.56× by",
    "  slowing the reference. On machines where each region's engine and worker have cores of",
    "  their own (the production shape) a three-region create is one region's path three times",
    "  side by side.",
    "- The rows made on demand (regions without warm nodes): one region 0.76-0.78 s = 2.5-2.8× the raw",
    "  run, three regions 1.30-1.49 s = 1.67-1.92× one (4 and 5 December). The floor row",
    "  (`engine_floor_to_healthy`: straight through the SDK, only",
    "  the engine work such a node needs beyond the raw run — its app's own network, three",
    "  ordering members attached beside the create and start, its volume, its secret files) took",
    "  1.65-2.26× the raw run: that work alone is beyond the 1.3× goal, which is why warm nodes",
    "  make it before the request. Three raw runs started at once took 1.92-2.42× one raw run:",
    "  two cores and one engine do not start three containers in the time of one.",
    "- Since 3 December the figure is the time to the operation's recorded end (`finished_at`);",
    "  the bench looks at the operation's row every 0.1 s (the Swarm section says why a tight",
    "  poll through the API slowed what it measured). Each warm run waits until",
    "  every region has its warm node again (ready: listening for its claim) and one more",
    "  second, so no refill overlaps it.",
]


NODESTATE_ANALYSIS = [
    "### Reading the figures",
    "",
    "- The node keeps its state, nonces, receipts, kv history and the place of every block and",
    "  transaction in `state.sqlite` (stdlib `sqlite3`, page cache 4 MiB, given back after 5 s idle)",
    "  and at most 2 MiB of parsed values in memory, so its memory does not follow the state.",
    "  Before, all of it lived in Python dicts: 12 transactions of 900 KB got a node OOM-killed.",
    '- "Own memory" is the container\'s anonymous memory; "as `docker stats` counts it" adds the page',
    "  cache it charged last and has not reclaimed yet (file pages of the blocks file and the",
    "  database, reclaimed under pressure: the cgroup's total usage sits at the 64 MiB limit while",
    "  writing, which is page cache, not the node). A restart re-checks every block (hash, proposer",
    "  signature, Merkle root, links) and trusts the state database up to the height it recorded.",
]


def run(only: list[str]) -> int:
    import docker

    call_command("migrate", verbosity=0)
    engine = docker.DockerClient(base_url=settings.BSN_DOCKER_BASE_URL, timeout=60)
    measured: dict[str, tuple[list[Figure], list[str]]] = {}
    from tests.bench import figures as figs

    known = {group for _, groups in SECTIONS.values() for group in groups}
    if set(only) - known:
        print(f"unknown figure group(s): {', '.join(sorted(set(only) - known))}; known: {', '.join(sorted(known))}")
        return 2
    # A section is rewritten whole: asking for one group of it runs the section's other groups too.
    wanted = {group for name in only for group in SECTIONS[section_of(name)][1]}
    if only and wanted != set(only):
        print(f"running {', '.join(sorted(wanted - set(only)))} too: the same section of docs/benchmarks.md")
    for name, fn in figs.ALL:
        if only and name not in wanted:
            continue
        figures, notes = measured.setdefault(section_of(name), ([], []))
        print(f"== {name}", flush=True)
        try:
            produced = fn(engine=engine, notes=notes)
        except Exception as exc:  # noqa: BLE001 - report the figure as failed, keep going
            notes.append(f"- {name}: could not be measured: {exc!r}")
            print(f"   failed: {exc!r}", flush=True)
            continue
        for figure in produced:
            figures.append(figure)
            ratio = f" ratio {figure.ratio:.2f}" if figure.ratio is not None else ""
            print(f"   {figure.name}: {figure.value:.3g} {figure.unit}{ratio} (goal {figure.goal})", flush=True)
    write_results(measured)
    print(f"results written to {RESULTS}")
    _remove_installation_objects(engine)
    return 0


def _remove_installation_objects(engine) -> None:
    """Leave nothing behind: every container, network and volume of this run's installation."""
    from apps.common.models import installation_id

    selector = {"label": f"io.bsn.installation={installation_id()}"}
    for container in engine.containers.list(all=True, filters=selector):
        container.remove(force=True, v=True)
    for network in engine.networks.list(filters=selector):
        network.remove()
    for volume in engine.volumes.list(filters=selector):
        volume.remove(force=True)

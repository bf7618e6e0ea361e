"""EtcdOrderer over a local etcd process with fake ledger cores (no Docker, no Django)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bsn.ledger import auth as node_auth
from bsn.ledger.etcd_http import EtcdClient, compare, op_put
from bsn.ledger.ordering.etcd import EtcdOrderer
from tests.ordering.conftest import FakeCore, envelope, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(etcd_server, prefix):
    """Factory of started (orderer, core) pairs on one prefix; all stopped at the end."""
    made: list[EtcdOrderer] = []

    def make(node_id: str, **overrides):
        config = {
            "node_id": node_id,
            "etcd_endpoints": [etcd_server.endpoint],
            "etcd_prefix": prefix,
            "block_max_txs": 50,
            "block_max_wait_ms": 5,
            "etcd_block_window": 10000,
            "peers": [],
            **overrides,
        }
        core = FakeCore(node_id)
        orderer = EtcdOrderer(config)
        orderer.start(core)
        made.append(orderer)
        return orderer, core

    yield make
    for orderer in made:
        orderer.stop()


def client(etcd_server) -> EtcdClient:
    return EtcdClient([etcd_server.endpoint])


def pending_nonces(c: EtcdClient, prefix: str) -> list[str]:
    """Nonces of the submissions waiting in P/pending/ (batches, oldest first)."""
    kvs = c.range(f"{prefix}pending/", prefix=True).kvs
    kvs.sort(key=lambda kv: (kv.create_revision, kv.key))
    return [env["tx"]["nonce"] for kv in kvs for env in json.loads(kv.value)]


def proposers(nodes) -> list[EtcdOrderer]:
    return [o for o, _ in nodes if o.is_proposer]


def test_one_node_orders_its_submissions(cluster, etcd_server, prefix):
    orderer, core = cluster("n1")
    assert wait_until(lambda: orderer.is_proposer, 5)
    orderer.submit([envelope(f"a{i}") for i in range(5)])
    assert core.wait_for(lambda: len(core.tx_nonces()) == 5)
    assert sorted(core.tx_nonces()) == [f"a{i}" for i in range(5)]
    c = client(etcd_server)
    assert c.range(f"{prefix}pending/", prefix=True).kvs == []
    assert int(c.get(f"{prefix}height").value) == core.height
    assert orderer.status() == {"mode": "etcd", "proposer": "n1", "is_proposer": True, "lag_blocks": 0}


def test_three_nodes_elect_one_proposer_and_agree(cluster):
    nodes = [cluster(f"n{i}") for i in range(3)]
    assert wait_until(lambda: len(proposers(nodes)) == 1, 5)
    for i, (orderer, _) in enumerate(nodes):  # every node takes submissions, proposer or not
        orderer.submit([envelope(f"n{i}-{j}") for j in range(20)])
    for _, core in nodes:
        assert core.wait_for(lambda core=core: len(core.tx_nonces()) == 60)
    chains = [[core.block(h)["hash"] for h in range(1, core.height + 1)] for _, core in nodes]
    assert chains[0] == chains[1] == chains[2]
    assert len(set(nodes[0][1].tx_nonces())) == 60  # each exactly once
    leader = proposers(nodes)[0]
    assert all(o.status()["proposer"] == leader.node_id for o, _ in nodes)


def test_staggered_first_campaigns_grant_one_lease_and_a_later_node_still_proposes_alone(
    cluster, monkeypatch, etcd_server, prefix
):
    """Nodes that start together with their ranks' delays (BSN_ETCD_CAMPAIGN_DELAY_MS): the
    first campaigns, the others find its key with a read — one lease granted, not three.
    A delayed node whose earlier peers never start becomes the proposer after its delay;
    a failover after the start is not delayed."""
    granted: list[int] = []
    real_grant = EtcdClient.lease_grant

    def counted(self, ttl):
        granted.append(ttl)
        return real_grant(self, ttl)

    monkeypatch.setattr(EtcdClient, "lease_grant", counted)
    nodes = [cluster(f"s{i}", etcd_campaign_delay_ms=200 * i) for i in range(3)]
    assert wait_until(lambda: all(o.status()["proposer"] == "s0" for o, _ in nodes), 5)
    time.sleep(0.5)  # past the last node's delay: it has looked
    assert len(granted) == 1 and [o.node_id for o in proposers(nodes)] == ["s0"]

    other_prefix = prefix.rstrip("/") + "-alone/"
    alone, _ = cluster("late", etcd_campaign_delay_ms=300, etcd_prefix=other_prefix)
    started = time.monotonic()
    assert wait_until(lambda: alone.is_proposer, 5)
    assert time.monotonic() - started >= 0.25

    client(etcd_server).lease_revoke(nodes[0][0]._lease)  # failover: s1 or s2 at once
    assert wait_until(lambda: proposers(nodes) and proposers(nodes)[0].node_id != "s0", 2)


def test_revoked_lease_moves_the_proposer_at_once(cluster, etcd_server):
    nodes = [cluster(f"n{i}") for i in range(3)]
    assert wait_until(lambda: len(proposers(nodes)) == 1, 5)
    old = proposers(nodes)[0]
    client(etcd_server).lease_revoke(old._lease)
    assert wait_until(lambda: proposers(nodes) and proposers(nodes)[0] is not old, 5)
    assert wait_until(lambda: not old.is_proposer, 3)  # its keep-alive saw the loss
    new = proposers(nodes)[0]
    nodes[0][0].submit([envelope("after-failover")])
    for _, core in nodes:
        assert core.wait_for(lambda core=core: "after-failover" in core.tx_nonces())
    assert new.is_proposer


def test_proposer_process_death_loses_nothing(etcd_server, prefix, cluster):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ordering.orderer_proc", etcd_server.endpoint, prefix, "doomed"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "PROPOSER"
        survivor, core = cluster("survivor")
        survivor.submit([envelope("before")])
        assert core.wait_for(lambda: core.tx_nonces() == ["before"])  # ordered by the child
        assert core.block(1)["header"]["proposer"] == "doomed"
        proc.kill()
        proc.wait(5)
        killed_at = time.monotonic()
        survivor.submit([envelope("during")])  # acknowledged into pending while nobody proposes
        assert core.wait_for(lambda: core.tx_nonces() == ["before", "during"], timeout=8)
        assert time.monotonic() - killed_at < 6  # lease TTL 3 s + campaign
        assert survivor.is_proposer
    finally:
        proc.kill()
        proc.wait(5)


def test_lost_compare_and_swap_resyncs_without_fork(etcd_server, prefix):
    c = client(etcd_server)
    core = FakeCore("me")
    orderer = EtcdOrderer({"node_id": "me", "etcd_endpoints": [etcd_server.endpoint], "etcd_prefix": prefix})
    orderer.core = core  # not started: drive the steps by hand
    orderer._campaign()
    assert orderer.is_proposer
    # Another proposer commits block 1 first (e.g. the previous lease holder, still in flight).
    rival = FakeCore("rival")
    block = rival.make_block([envelope("rival")], 1)
    ok, _ = c.txn(
        [compare(f"{prefix}height", "CREATE", "==", 0)],
        [op_put(f"{prefix}height", "1"), op_put(f"{prefix}blocks/{1:020d}", json.dumps(block))],
    )
    assert ok
    orderer.submit([envelope("mine")])  # the proposer keeps its own submissions in memory
    assert pending_nonces(c, prefix) == []
    assert orderer._commit(0, orderer._read_pending()) is True  # CAS lost, nothing written
    assert int(c.get(f"{prefix}height").value) == 1
    assert [e["tx"]["nonce"] for e in orderer._local] == ["mine"]  # still waiting for a block
    orderer._catch_up()
    assert core.tx_nonces() == ["rival"]
    assert orderer._propose_once()  # now on top of the rival's block
    assert core.tx_nonces() == ["rival", "mine"]
    assert core.block(2)["header"]["prev_hash"] == block["hash"]
    orderer.stop()


def test_deposed_proposer_cannot_commit(etcd_server, prefix):
    core = FakeCore("me")
    orderer = EtcdOrderer({"node_id": "me", "etcd_endpoints": [etcd_server.endpoint], "etcd_prefix": prefix})
    orderer.core = core
    orderer._campaign()
    lease = orderer._lease
    client(etcd_server).lease_revoke(lease)  # lease gone, but the node has not noticed yet
    orderer.submit([envelope("x")])
    assert orderer._commit(0, orderer._read_pending()) is True
    assert client(etcd_server).get(f"{prefix}height") is None
    # Once it notices, what it was given goes to P/pending for the next proposer: not lost.
    orderer._resign("test: the lease is gone")
    assert orderer._hand_over_local() is True
    assert pending_nonces(client(etcd_server), prefix) == ["x"]
    assert not orderer._local
    orderer.stop()


def test_the_proposer_orders_its_own_submissions_without_pending_keys(cluster, etcd_server, prefix):
    orderer, core = cluster("solo-ish")
    assert wait_until(lambda: orderer.is_proposer, 5)
    c = client(etcd_server)
    puts = []
    real_txn = orderer.client.txn
    orderer.client.txn = lambda compares, ops, *a, **kw: puts.extend(ops) or real_txn(compares, ops, *a, **kw)
    orderer.submit([envelope(f"m{i}") for i in range(20)])
    assert core.wait_for(lambda: len(core.tx_nonces()) == 20)
    assert core.tx_nonces() == [f"m{i}" for i in range(20)]
    written = [base64.b64decode(op["request_put"]["key"]).decode() for op in puts if "request_put" in op]
    assert not [k for k in written if "/pending/" in k]  # only height and blocks
    assert pending_nonces(c, prefix) == [] and not orderer._local


def test_submissions_held_by_a_proposer_that_stops_go_to_the_next_one(cluster, etcd_server, prefix):
    first = EtcdOrderer({"node_id": "first", "etcd_endpoints": [etcd_server.endpoint], "etcd_prefix": prefix})
    first.core = FakeCore("first")
    first._campaign()  # proposer, but its propose loop never runs: submissions wait in memory
    assert first.is_proposer
    first.submit([envelope(f"h{i}") for i in range(5)])
    assert pending_nonces(client(etcd_server), prefix) == []
    first.stop()  # hands them over, then gives the proposer key up
    assert pending_nonces(client(etcd_server), prefix) == [f"h{i}" for i in range(5)]
    _, core = cluster("second")
    assert core.wait_for(lambda: core.tx_nonces() == [f"h{i}" for i in range(5)])


def test_pending_submissions_survive_until_a_proposer_exists(etcd_server, prefix, cluster):
    writer = EtcdOrderer({"node_id": "w", "etcd_endpoints": [etcd_server.endpoint], "etcd_prefix": prefix})
    writer.submit([envelope(f"p{i}") for i in range(30)])  # no proposer anywhere yet
    c = client(etcd_server)
    assert pending_nonces(c, prefix) == [f"p{i}" for i in range(30)]
    _, core = cluster("late")
    assert core.wait_for(lambda: len(core.tx_nonces()) == 30)
    assert [n for n in core.tx_nonces()] == [f"p{i}" for i in range(30)]  # oldest first


PEER_CREDENTIAL = "peer-credential-0123456789abcdef"


class _BlocksHandler(BaseHTTPRequestHandler):
    """A peer's ``GET /blocks/{h}``: refuses unsigned requests and MACs its replies
    (docs/ledger-protocol.md "Node authentication"); an ``impostor`` does neither."""

    core: FakeCore
    impostor = False

    def do_GET(self):
        key = PEER_CREDENTIAL.encode()
        nonce = node_auth.check_request(key, self.headers.get("Authorization"), "GET", self.path, b"")
        if nonce is None and not self.impostor:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        height = int(self.path.rsplit("/", 1)[-1])
        block = self.core.block(height)
        if block and self.impostor:
            block = {**block, "hash": "0" * 64}  # forged: would not apply
        body = json.dumps(block).encode() if block else b"{}"
        status = 200 if block else 404
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if not self.impostor:
            self.send_header(node_auth.REPLY_HEADER, node_auth.reply_mac(key, nonce, status, body))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_window_deletes_old_blocks_and_late_node_fetches_them_from_peers(cluster, etcd_server, prefix):
    orderer, core = cluster("a", etcd_block_window=3, block_max_txs=1)
    for i in range(6):
        orderer.submit([envelope(f"w{i}")])
        assert core.wait_for(lambda i=i: core.height == i + 1)
    keys = [kv.key.decode() for kv in client(etcd_server).range(f"{prefix}blocks/", prefix=True, keys_only=True).kvs]
    assert keys == [f"{prefix}blocks/{h:020d}" for h in (4, 5, 6)]

    servers = []
    for impostor in (True, False):  # an impostor on a peer's port serves what it wants, unsigned
        handler = type("H", (_BlocksHandler,), {"core": core, "impostor": impostor})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    peers = [f"http://127.0.0.1:{server.server_address[1]}" for server in servers]
    try:
        late, late_core = cluster("late", peers=peers, peer_credentials={url: PEER_CREDENTIAL for url in peers})
        assert late_core.wait_for(lambda: late_core.height == 6)
        assert late_core.block(6)["hash"] == core.block(6)["hash"]
        assert late.status()["lag_blocks"] == 0
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_submit_raises_ordering_unavailable_when_etcd_is_down():
    from bsn.ledger.ordering import OrderingUnavailable

    orderer = EtcdOrderer({"node_id": "x", "etcd_endpoints": ["http://127.0.0.1:9"], "etcd_prefix": "/p/"})
    with pytest.raises(OrderingUnavailable):
        orderer.submit([envelope("lost")])


def test_a_batch_make_block_leaves_entirely_out_is_cleared_without_an_empty_block(cluster, etcd_server, prefix):
    orderer, core = cluster("n1")
    assert wait_until(lambda: orderer.is_proposer, 5)
    real_make_block = core.make_block
    core.make_block = lambda envelopes, ts, **kw: real_make_block(
        [e for e in envelopes if e["tx"]["nonce"] != "bad"], ts, **kw
    )
    orderer.submit([envelope("bad")])
    c = client(etcd_server)
    assert wait_until(lambda: c.range(f"{prefix}pending/", prefix=True).kvs == [], 5)
    assert core.height == 0 and c.get(f"{prefix}height") is None
    orderer.submit([envelope("good")])
    assert core.wait_for(lambda: core.tx_nonces() == ["good"])


def test_a_large_submission_is_split_into_whole_batches_in_order(cluster, etcd_server, prefix):
    writer = EtcdOrderer(
        {"node_id": "w", "etcd_endpoints": [etcd_server.endpoint], "etcd_prefix": prefix, "block_max_txs": 7}
    )
    writer.submit([envelope(f"s{i}") for i in range(30)])  # 5 batches: 7+7+7+7+2
    c = client(etcd_server)
    sizes = [len(json.loads(kv.value)) for kv in c.range(f"{prefix}pending/", prefix=True).kvs]
    assert sorted(sizes) == [2, 7, 7, 7, 7]
    assert pending_nonces(c, prefix) == [f"s{i}" for i in range(30)]
    writer.stop()
    _, core = cluster("p", block_max_txs=7)
    assert core.wait_for(lambda: len(core.tx_nonces()) == 30)
    assert core.tx_nonces() == [f"s{i}" for i in range(30)]  # submission order kept
    assert [len(core.block(h)["txs"]) for h in range(1, core.height + 1)] == [7, 7, 7, 7, 2]


def test_an_unreadable_pending_batch_is_dropped_and_the_rest_ordered(cluster, etcd_server, prefix):
    c = client(etcd_server)
    c.put(f"{prefix}pending/garbage.000000", b"{not json")
    orderer, core = cluster("n1")
    assert wait_until(lambda: orderer.is_proposer, 5)
    orderer.submit([envelope("fine")])
    assert core.wait_for(lambda: core.tx_nonces() == ["fine"])
    assert wait_until(lambda: c.range(f"{prefix}pending/", prefix=True).kvs == [], 5)


def test_other_nodes_batches_come_from_the_watch_without_a_read(cluster, etcd_server, prefix):
    """A batch the watch has delivered is taken from it: the proposer reads none of them.
    Which of the two gets there first is the machine's scheduling (a loaded CI run had the
    listing first for up to six of ten batches), so the proposer here waits, bounded, for
    the watch before taking each batch; then not one read. A batch the watch has not
    delivered is read (the fallback): the last one, hidden from the watch."""
    proposer, core = cluster("p")
    assert wait_until(lambda: proposer.is_proposer, 5)
    other, _ = cluster("o")
    reads = []
    real_get = proposer.client.get
    proposer.client.get = lambda key: reads.append(key) or real_get(key)
    real_batch = proposer._pending_batch
    hide = threading.Event()

    def after_the_watch(key):
        if hide.is_set():
            proposer._seen.pop(key, None)  # as if the watch had not got there yet
        else:
            wait_until(lambda: key in proposer._seen, 5)
        return real_batch(key)

    proposer._pending_batch = after_the_watch
    expected = []
    for batch in range(10):
        nonces = [f"o{batch}.{i}" for i in range(5)]
        expected += nonces
        other.submit([envelope(n) for n in nonces])
        assert core.wait_for(lambda e=list(expected): core.tx_nonces() == e)
    assert [k for k in reads if "/pending/" in str(k)] == []  # every batch came from the watch
    hide.set()  # every earlier batch is committed and deleted: only the next one is listed
    other.submit([envelope("o10.0")])
    assert core.wait_for(lambda: core.tx_nonces() == [*expected, "o10.0"])
    assert len({k for k in reads if "/pending/" in str(k)}) == 1  # the hidden batch was read
    assert wait_until(lambda: proposer._seen == {} and other._mine == {}, 5)  # cleared by the commit's deletes


def test_catch_up_waits_for_every_block_committed_before_it(cluster, etcd_server, prefix):
    """Read-your-writes: a node whose watch lags applies, before catch_up returns, every
    block another node had committed when it was called (the unknown-signer path)."""
    proposer, core = cluster("p")
    assert wait_until(lambda: proposer.is_proposer, 5)
    lagging, slow = cluster("slow")
    real_apply = slow.apply_committed

    def apply_slowly(block, **kw):
        time.sleep(0.2)  # a watch well behind the proposer
        return real_apply(block, **kw)

    slow.apply_committed = apply_slowly
    for i in range(3):
        proposer.submit([envelope(f"c{i}")])
        assert core.wait_for(lambda i=i: core.height == i + 1)
    assert slow.height < core.height  # behind when asked
    assert lagging.catch_up(5.0) is True
    assert slow.height == core.height
    assert lagging.catch_up(5.0) is False  # nothing left to wait for: returns at once


def test_catch_up_without_etcd_returns_false_at_once():
    orderer = EtcdOrderer(
        {"node_id": "x", "etcd_endpoints": ["http://127.0.0.1:9"], "etcd_prefix": "/p/", "etcd_timeout": 0.5}
    )
    orderer.core = FakeCore("x")
    assert orderer.catch_up(2.0) is False


def test_a_start_reads_etcd_once_then_watches_and_catches_up_page_by_page(cluster, etcd_server, prefix, monkeypatch):
    """Before its watch a node reads its blocks, P/height, the pending keys and P/proposer
    in one read-only transaction (one linearizable read: a round of the members each);
    a node further behind than one page goes on page by page and misses nothing."""
    reads: dict[str, list[str]] = {"p": [], "late": []}
    real_call = EtcdClient.call

    def counted(self, path, body, **kw):
        name = threading.current_thread().name  # etcd-watch-<node id>: the watch's thread
        if name.startswith("etcd-watch-"):
            reads[name.removeprefix("etcd-watch-")].append(path)
        return real_call(self, path, body, **kw)

    monkeypatch.setattr(EtcdClient, "call", counted)
    proposer, core = cluster("p")
    assert wait_until(lambda: proposer.is_proposer and proposer._watch is not None, 5)
    assert reads["p"] == ["/v3/kv/txn"]  # a new app's node: one read, then its watch
    for i in range(5):
        proposer.submit([envelope(f"b{i}")])
        assert core.wait_for(lambda i=i: core.height == i + 1)
    monkeypatch.setattr("bsn.ledger.ordering.etcd.CATCH_UP_PAGE", 2)
    late, late_core = cluster("late", etcd_campaign_delay_ms=60000)  # never campaigns here
    assert late_core.wait_for(lambda: late_core.tx_nonces() == [f"b{i}" for i in range(5)])
    assert wait_until(lambda: late._proposer_seen == "p" and late._watch is not None, 5)
    # the transaction (blocks 1-2 in it), blocks 3-4, block 5, no more blocks, P/height
    assert reads["late"] == ["/v3/kv/txn", *["/v3/kv/range"] * 4]
    proposer.submit([envelope("after")])  # from the watch
    assert late_core.wait_for(lambda: late_core.tx_nonces()[-1:] == ["after"])

"""State on disk: chains written by the in-memory node replay to the same roots, the
state database catches up or is rebuilt, and the size and nesting limits hold.

The fixtures under ``fixtures/old_chain_*`` were written by the node before its state
moved to SQLite (commit d887867, ``fixtures/gen_old_chain.py.txt``); ``expected.json``
holds the roots, state, history and receipts that code reached.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest

from bsn.ledger.canonical import MAX_DEPTH, canonical, depth_within, loads
from bsn.ledger.chain import LedgerCore
from bsn.ledger.tx import now_ms, tx_id_of
from tests.ledger.helpers import Key, add_user, core_config

FIXTURES = Path(__file__).parent / "fixtures"
CHAINS = {"kv": ("kv", {}), "asset": ("asset", {"issuer": "alice"})}
ALICE = Key("alice")


def _expected(name: str) -> dict:
    return json.loads((FIXTURES / f"old_chain_{name}" / "expected.json").read_text())


def _copy_chain(name: str, data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    shutil.copy(FIXTURES / f"old_chain_{name}" / "blocks.jsonl", data_dir / "blocks.jsonl")


def _nested(levels: int) -> object:
    value: object = "bottom"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_an_old_chain_replays_block_by_block_to_the_same_roots(tmp_path, name):
    """Every block of a chain the in-memory node wrote, applied as a peer would."""
    contract, params = CHAINS[name]
    expected = _expected(name)
    core = LedgerCore(core_config(str(tmp_path / "peer"), contract=contract, contract_params=params))
    core.open()
    lines = (FIXTURES / f"old_chain_{name}" / "blocks.jsonl").read_bytes().splitlines()
    roots = []
    for line in lines:
        core.apply_committed(loads(line), parsed=True)
        roots.append(core.state_root)
    assert roots == expected["roots"]
    assert (core.height, core.head_hash) == (expected["height"], expected["head_hash"])
    assert core.state.dump() == expected["state"]
    assert core.state.all_receipts() == expected["receipts"]
    assert core.users() == expected["users"]
    assert (core.state.committed, core.state.failed) == (expected["committed"], expected["failed"])
    for contract_name, key, history in expected["history"]:
        assert core.query(contract_name, "history", {"key": key}) == history
    core.close()


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_a_node_serves_an_old_chain_with_the_same_roots_after_each_kind_of_start(make_node, tmp_path, name):
    contract, params = CHAINS[name]
    expected = _expected(name)
    data = tmp_path / "data"
    _copy_chain(name, data)
    node = make_node(data, BSN_CONTRACT=contract, BSN_CONTRACT_PARAMS=json.dumps(params))

    def check() -> None:
        chain = node.chain()
        assert (chain["height"], chain["head_hash"], chain["state_root"]) == (
            expected["height"],
            expected["head_hash"],
            expected["state_root"],
        )
        assert chain["users"] == expected["users"]
        for key, value in expected["state"][contract].items():
            assert node.state(contract, key).json()["value"] == value
        for tx_id, receipt in expected["receipts"].items():
            reply = node.request("GET", f"/tx/{tx_id}")
            assert reply.status == 200
            assert reply.json()["receipt"] == receipt
            assert tx_id_of(reply.json()["tx"]["tx"]) == tx_id
        for height in range(1, expected["height"] + 1):
            assert node.request("GET", f"/blocks/{height}").status == 200

    node.start()  # no state database: built from the blocks file
    check()
    node.restart()  # the state database is trusted up to its height
    check()
    node.stop()
    (data / "state.sqlite").unlink()  # lost: rebuilt again
    for suffix in ("-wal", "-shm"):
        (data / f"state.sqlite{suffix}").unlink(missing_ok=True)
    node.start()
    check()


def test_a_block_holding_a_deeply_nested_transaction_stays_readable(make_node, tmp_path):
    """The old node committed a value nested 900 levels; every read of it still answers."""
    data = tmp_path / "data"
    _copy_chain("kv", data)
    node = make_node(data).start()
    deep_tx = next(t for t, r in _expected("kv")["receipts"].items() if r["height"] == 4)
    block = node.request("GET", "/blocks/4")
    assert block.status == 200 and not depth_within(block.body, MAX_DEPTH)
    reply = node.request("GET", f"/tx/{deep_tx}")
    assert reply.status == 200 and reply.body.startswith(b'{"receipt":')
    assert node.state("kv", "deep").status == 200
    history = node.query("kv", "history", {"key": "deep"})
    assert history.status == 200
    # The same chain carries on: new blocks on top of it.
    assert node.submit(Key("alice", _alice_key()).tx("kv", "put", {"key": "after", "value": 1})).status == 200


def _alice_key() -> str:
    # The fixtures' alice (tests/ledger/fixtures/gen_old_chain.py.txt).
    return "ulzo9/vKGFhocA8V/q88YWP/sZm/nhxR+SeL8EurkKY="


def test_a_state_database_behind_the_blocks_file_catches_up(make_node, tmp_path):
    """A crash can leave SQLite's last commits unwritten: the node re-applies those blocks."""
    node = make_node().start()
    assert node.submit(add_user(ALICE)).status == 200
    for i in range(3):
        assert node.submit(ALICE.tx("kv", "put", {"key": f"a{i}", "value": i})).status == 200
    node.stop()
    behind = tmp_path / "behind"
    behind.mkdir()
    for path in node.data_dir.glob("state.sqlite*"):
        shutil.copy(path, behind / path.name)
    node.start()
    for i in range(3):
        assert node.submit(ALICE.tx("kv", "put", {"key": f"b{i}", "value": i})).status == 200
    assert node.submit(ALICE.tx("kv", "delete", {"key": "a0"})).status == 200
    expected = node.chain()
    node.stop(signal.SIGKILL)
    for path in node.data_dir.glob("state.sqlite*"):
        path.unlink()
    for path in behind.iterdir():
        shutil.copy(path, node.data_dir / path.name)
    node.start()
    again = node.chain()
    assert (again["height"], again["head_hash"], again["state_root"]) == (
        expected["height"],
        expected["head_hash"],
        expected["state_root"],
    )
    assert node.state("kv", "b2").json()["value"] == 2
    assert node.state("kv", "a0").status == 404
    replay = ALICE.tx("kv", "put", {"key": "x", "value": 1})
    assert node.submit(replay).status == 200
    assert node.submit(replay).json()["status"] == "committed"  # the same receipt, not a second apply


def test_a_state_database_of_another_chain_is_rebuilt(make_node, tmp_path):
    one = make_node(tmp_path / "one").start()
    assert one.submit(add_user(ALICE)).status == 200
    assert one.submit(ALICE.tx("kv", "put", {"key": "only-in-one", "value": 1})).status == 200
    one.stop()
    two = make_node(tmp_path / "two").start()
    assert two.submit(add_user(ALICE)).status == 200
    expected = two.chain()
    two.stop()
    for path in (tmp_path / "two").glob("state.sqlite*"):
        path.unlink()
    for path in (tmp_path / "one").glob("state.sqlite*"):
        shutil.copy(path, tmp_path / "two" / path.name)
    two.start()
    assert two.chain()["state_root"] == expected["state_root"]
    assert two.state("kv", "only-in-one").status == 404
    two.stop()
    assert "rebuilding the state database" in two.stderr


def test_state_database_holds_the_state_and_not_memory(make_node):
    node = make_node().start()
    assert node.submit(add_user(ALICE)).status == 200
    assert node.submit(ALICE.tx("kv", "put", {"key": "k", "value": {"v": [1, 2]}})).status == 200
    node.stop()
    db = sqlite3.connect(node.data_dir / "state.sqlite")
    rows = dict(db.execute("SELECT key, value FROM kv WHERE contract = 'kv'").fetchall())
    height = db.execute("SELECT height FROM meta").fetchone()[0]
    db.close()
    assert rows == {"k": canonical({"v": [1, 2]})}
    assert height == 2


# Nesting: refused at the node before it can be in a block.


def test_json_nested_deeper_than_64_levels_is_a_400_at_the_node(make_node):
    node = make_node().start()
    assert node.submit(add_user(ALICE)).status == 200
    # envelope {"tx": {"args": {"value": ...}}}: 3 levels around the value
    fits = ALICE.tx("kv", "put", {"key": "ok", "value": _nested(MAX_DEPTH - 3)})
    assert node.submit(fits).status == 200
    deep = ALICE.tx("kv", "put", {"key": "deep", "value": _nested(MAX_DEPTH - 2)})
    reply = node.submit(deep)
    assert (reply.status, reply.json()["error"]) == (400, "too_deep")
    reply = node.batch([deep, ALICE.tx("kv", "put", {"key": "fine", "value": 1})])
    assert (reply.status, reply.json()["error"]) == (400, "too_deep")
    assert node.batch([fits]).status == 200  # 64 levels inside a batch is fine
    assert node.request("GET", f"/tx/{tx_id_of(deep['tx'])}").status == 404
    # Far deeper than the parser's recursion limit: still a clean 400, and the node lives.
    very = b"[" * 150_000 + b"]" * 150_000
    for path in ("/tx", "/tx/batch", "/query"):
        reply = node.request("POST", path, raw=very)
        assert (reply.status, reply.json()["error"]) == (400, "too_deep")
    assert node.request("GET", "/health").status == 200


def test_a_proposer_leaves_out_a_deep_or_large_envelope_it_did_not_precheck(tmp_path):
    """Envelopes reaching make_block from elsewhere (another node's pending batch) are held
    to the same limits: they get a rejection receipt and never enter a block."""
    core = LedgerCore(core_config(str(tmp_path / "d"), tx_max_bytes=4096))
    core.open()
    block = core.make_block([add_user(ALICE)], now_ms())
    core.apply_committed(block)
    deep = ALICE.tx("kv", "put", {"key": "deep", "value": _nested(MAX_DEPTH)})
    large = ALICE.tx("kv", "put", {"key": "large", "value": "x" * 5000})
    fine = ALICE.tx("kv", "put", {"key": "fine", "value": 1})
    block = core.make_block([json.loads(json.dumps(e)) for e in (deep, large, fine)], now_ms(), parsed=True)
    assert [e["tx"]["args"]["key"] for e in block["txs"]] == ["fine"]
    assert core.receipt(tx_id_of(deep["tx"]))["error"] == "too_deep"
    assert core.receipt(tx_id_of(large["tx"]))["error"] == "too_large"
    core.close()


@pytest.mark.parametrize(
    ("text", "limit", "within"),
    [
        (b"1", 0, True),
        (b"[]", 0, False),
        (b"[]", 1, True),
        (b'{"a":[{"b":[]}]}', 3, False),
        (b'{"a":[{"b":[]}]}', 4, True),
        (b'{"a":"[[[[{{{{"}', 1, True),
        (b'["\\"[[["]', 1, True),
        (b"[[]", 5, False),
    ],
)
def test_depth_within(text, limit, within):
    assert depth_within(text, limit) is within


def test_limits_are_configurable_within_bounds():
    from bsn.ledger.config import ConfigError, load

    config = load({"BSN_TX_MAX_BYTES": "4096", "BSN_BATCH_MAX_TXS": "10", "BSN_STATE_CACHE_BYTES": "0"})
    assert (config.tx_max_bytes, config.batch_max_txs, config.state_cache_bytes) == (4096, 10, 0)
    for name, value in (("BSN_TX_MAX_BYTES", "2000000"), ("BSN_TX_MAX_BYTES", "10"), ("BSN_BATCH_MAX_TXS", "0")):
        with pytest.raises(ConfigError, match=name):
            load({name: value})

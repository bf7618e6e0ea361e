"""Durability and start-up verification: nothing acknowledged is lost, a bad chain is refused."""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from bsn.ledger.block import verify_chain
from tests.ledger.helpers import Key, add_user

ALICE = Key("alice")


def _fill(node, count=60):
    assert node.submit(add_user(ALICE)).status == 200
    envs = [ALICE.tx("kv", "put", {"key": f"k{i}", "value": {"i": i}}) for i in range(count)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        receipts = [r.json() for r in pool.map(node.submit, envs)]
    assert all(r["status"] == "committed" for r in receipts)
    return receipts


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_acknowledged_transactions_survive_restart_and_the_chain_verifies(make_node, sig):
    node = make_node().start()
    receipts = _fill(node)
    node.batch([ALICE.tx("kv", "delete", {"key": "k0"})])
    before = node.chain()

    node.restart(sig)

    after = node.chain()
    assert (after["height"], after["head_hash"], after["state_root"]) == (
        before["height"],
        before["head_hash"],
        before["state_root"],
    )
    for receipt in receipts:
        assert node.request("GET", f"/tx/{receipt['tx_id']}").json()["receipt"] == receipt
    assert node.state("kv", "k0").status == 404
    assert node.state("kv", "k59").json()["value"] == {"i": 59}
    assert verify_chain(node.blocks(), {"node-1": after["public_key"]}, app="app-1") == after["height"]
    assert node.submit(ALICE.tx("kv", "put", {"key": "after", "value": 1})).status == 200


def test_blocks_file_is_canonical_json_lines(node_with_blocks):
    node = node_with_blocks
    lines = node.blocks_file.read_bytes().splitlines()
    assert len(lines) == node.chain()["height"]
    for height, line in enumerate(lines, 1):
        block = json.loads(line)
        assert block["header"]["height"] == height
        assert line == json.dumps(block, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert node.request("GET", f"/blocks/{height}").body == line


@pytest.fixture
def node_with_blocks(make_node):
    node = make_node().start()
    _fill(node, 20)
    return node


def _refused(node, match: bytes) -> None:
    proc = node.spawn()
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1, err
    assert match in err, err


def _tamper(path, height, change):
    lines = path.read_bytes().splitlines()
    block = json.loads(lines[height - 1])
    change(block)
    lines[height - 1] = json.dumps(block, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b["txs"][0]["tx"]["args"].update(value={"i": 999}),
        lambda b: b["header"].update(timestamp=b["header"]["timestamp"] + 1),
        lambda b: b.update(signature=b["signature"][:-4] + "AAA="),
        lambda b: b["header"].update(prev_hash="0" * 64),
    ],
)
def test_a_tampered_blocks_file_makes_the_node_refuse_to_start(node_with_blocks, change):
    node = node_with_blocks
    node.stop()
    _tamper(node.blocks_file, 2, change)
    tampered = node.blocks_file.read_bytes()
    _refused(node, b"does not verify")
    assert node.blocks_file.read_bytes() == tampered  # left untouched for inspection


def test_a_removed_middle_block_makes_the_node_refuse_to_start(node_with_blocks):
    node = node_with_blocks
    node.stop()
    lines = node.blocks_file.read_bytes().splitlines(keepends=True)
    node.blocks_file.write_bytes(b"".join(lines[:1] + lines[2:]))
    _refused(node, b"does not verify")


@pytest.mark.parametrize("tail", [b'{"hash":"ab', b"\x00\x00\x00\x00", b"garbage\n", b'{"hash"\n\x00'])
def test_a_torn_tail_is_dropped(node_with_blocks, tail):
    node = node_with_blocks
    before = node.chain()
    node.stop(signal.SIGKILL)
    good = node.blocks_file.read_bytes()
    node.blocks_file.write_bytes(good + tail)
    node.start()
    assert node.chain()["head_hash"] == before["head_hash"]
    assert node.blocks_file.read_bytes() == good
    node.stop()
    assert "dropping" in node.stderr and "torn" in node.stderr


def test_an_unreadable_line_before_blocks_is_corruption(node_with_blocks):
    node = node_with_blocks
    node.stop()
    lines = node.blocks_file.read_bytes().splitlines(keepends=True)
    node.blocks_file.write_bytes(lines[0] + b"xx\n" + b"".join(lines[1:]))
    _refused(node, b"corrupt")


def test_a_different_node_key_refuses_the_chain(node_with_blocks):
    node = node_with_blocks
    node.stop()
    node.env["BSN_NODE_PRIVATE_KEY"] = Key("other").private
    _refused(node, b"signature is not the proposer's")


def test_a_solo_node_without_a_key_keeps_one_in_its_data_dir(make_node):
    node = make_node(BSN_NODE_PRIVATE_KEY="")
    node.start()
    public = node.chain()["public_key"]
    assert (node.data_dir / "node.key").exists()
    _fill(node, 3)
    node.restart()
    assert node.chain()["public_key"] == public


def test_second_node_on_the_same_data_dir_is_refused(node_with_blocks, make_node):
    other = make_node(node_with_blocks.data_dir)
    _refused(other, b"locked by another running node")
    assert node_with_blocks.request("GET", "/health").status == 200

"""Durability: nothing acknowledged is lost across restarts and crashes."""

from __future__ import annotations

import json
import signal

import pytest


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_acknowledged_writes_survive_restart(node, sig):
    for i in range(50):
        assert node.put(f"k{i}", {"i": i}).status == 200
    node.put("gone", 1)
    node.delete("gone")
    node.put("k0", "overwritten")

    node.restart(sig)

    assert node.get("k0").json()["value"] == "overwritten"
    assert all(node.get(f"k{i}").json()["value"] == {"i": i} for i in range(1, 50))
    assert node.get("gone").status == 404
    assert node.request("GET", "/info").json()["keys"] == 50


def test_log_is_json_lines_with_sequence_numbers(node):
    node.put("a", [1, 2])
    node.delete("a")
    lines = node.wal.read_bytes().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"seq": 1, "op": "put", "key": "a", "value": [1, 2]},
        {"seq": 2, "op": "delete", "key": "a"},
    ]


def test_rejected_and_noop_requests_are_not_logged(node):
    node.request("PUT", "/kv/a", raw=b"bad")
    node.delete("missing")
    assert node.wal.read_bytes() == b""


@pytest.mark.parametrize(
    "tail", [b'{"seq":3,"op":"put","ke', b"\x00\x00\x00\x00", b'{"seq":3,"op":"put"\n', b"garbage\n\x00"]
)
def test_torn_tail_from_a_crash_is_dropped(make_node, tmp_path, tail):
    data = tmp_path / "data"
    data.mkdir()
    good = b'{"key":"a","op":"put","seq":1,"value":1}\n{"key":"b","op":"put","seq":2,"value":2}\n'
    (data / "wal.jsonl").write_bytes(good + tail)

    node = make_node(data).start()

    assert node.get("a").json()["value"] == 1
    assert node.get("b").json()["value"] == 2
    assert node.wal.read_bytes() == good  # the torn bytes are cut off before new writes
    node.put("c", 3)
    node.restart(signal.SIGKILL)
    assert [node.get(k).json()["value"] for k in "abc"] == [1, 2, 3]


def test_torn_tail_is_reported_on_stderr(make_node, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "wal.jsonl").write_bytes(b'{"key":"a","op":"put","seq":1,"value":1}\n{"seq":2')
    node = make_node(data).start()
    node.stop()
    assert "dropping 8 bytes of torn records" in node.stderr


def test_corruption_before_valid_records_refuses_to_start(make_node, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    wal = b'{"key":"a","op":"put","seq":1,"value":1}\nxx\n{"key":"b","op":"put","seq":2,"value":2}\n'
    (data / "wal.jsonl").write_bytes(wal)
    node = make_node(data)
    proc = node.spawn()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert b"corrupt" in err
    assert (data / "wal.jsonl").read_bytes() == wal  # left untouched for inspection


def test_second_node_on_the_same_data_dir_is_refused(node, make_node):
    other = make_node(node.data_dir)
    proc = other.spawn()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert b"locked by another running node" in err
    assert node.request("GET", "/health").status == 200

"""Configuration, the write-ahead log and the kv contract, without a server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bsn.ledger.config import Config, ConfigError, load
from bsn.ledger.contracts.kv import ContractError, KVContract
from bsn.ledger.store import StoreError, WriteAheadLog

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_defaults():
    assert load({}) == Config(host="0.0.0.0", port=8080, data_dir="/data", contract="kv")


def test_values_are_read():
    env = {
        "BSN_LEDGER_HOST": "127.0.0.1",
        "BSN_LEDGER_PORT": "9000",
        "BSN_LEDGER_DATA": "/tmp/x",
        "BSN_NODE_ID": "n-1",
        "BSN_APP_ID": "3f2a:app.x",
        "BSN_CONTRACT": "kv",
        "BSN_LEDGER_ACCESS_LOG": "yes",
    }
    assert load(env) == Config("127.0.0.1", 9000, "/tmp/x", "n-1", "3f2a:app.x", "kv", True)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BSN_LEDGER_PORT", "http", "must be an integer"),
        ("BSN_LEDGER_PORT", "70000", "between 0 and 65535"),
        ("BSN_LEDGER_HOST", " ", "must not be empty"),
        ("BSN_LEDGER_DATA", "", "must not be empty"),
        ("BSN_NODE_ID", "", "BSN_NODE_ID must be"),
        ("BSN_APP_ID", "a b", "BSN_APP_ID must be"),
        ("BSN_CONTRACT", "erc20", "must be one of: kv"),
        ("BSN_LEDGER_ACCESS_LOG", "maybe", "must be a boolean"),
    ],
)
def test_bad_values_are_refused(name, value, message):
    with pytest.raises(ConfigError, match=message):
        load({name: value})


def test_bad_config_exits_2_with_a_clear_message():
    proc = subprocess.run(
        [sys.executable, "-m", "bsn.ledger"],
        cwd=REPO_ROOT,
        env={"BSN_LEDGER_PORT": "eighty", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=10,
    )
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == (
        "bsn-ledger: configuration error: BSN_LEDGER_PORT must be an integer, got 'eighty'"
    )


def test_node_imports_nothing_heavy():
    # The image ships only bsn/__init__.py and bsn/ledger: importing Django (or any
    # third-party package) would break it, and would cost memory in every node.
    code = (
        "import sys; sys.modules['ssl'] = None; import bsn.ledger.server, bsn.ledger.__main__; "
        "print(sorted(m.split('.')[0] for m, mod in sys.modules.items() if mod))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    top = set(eval(out.stdout))  # noqa: S307 - our own output
    assert not top & {"django", "rest_framework", "celery", "docker", "requests", "cryptography", "ssl"}


def test_log_replays_in_order(tmp_path):
    log = WriteAheadLog(str(tmp_path))
    assert log.open(lambda r: None) == 0
    for i in range(3):
        log.append({"op": "put", "key": "k", "value": i})
    log.close()

    seen = []
    again = WriteAheadLog(str(tmp_path))
    assert again.open(seen.append) == 3
    assert [r["value"] for r in seen] == [0, 1, 2]
    assert again.append({"op": "delete", "key": "k"})["seq"] == 4
    again.close()


def test_log_refuses_a_gap_in_sequence(tmp_path):
    (tmp_path / "wal.jsonl").write_text('{"seq":1}\n{"seq":3}\n{"seq":4}\n')
    with pytest.raises(StoreError, match="corrupt at byte 10"):
        WriteAheadLog(str(tmp_path)).open(lambda r: None)


def test_closed_log_refuses_writes(tmp_path):
    log = WriteAheadLog(str(tmp_path))
    log.open(lambda r: None)
    log.close()
    with pytest.raises(StoreError):
        log.append({"op": "put"})


def test_kv_contract_rebuilds_state_from_records():
    kv = KVContract()
    records = [kv.put_record("a", 1), kv.put_record("b", 2)]
    for r in records:
        kv.apply(r)
    kv.apply(kv.delete_record("a"))
    assert kv.delete_record("a") is None
    assert len(kv) == 1
    assert kv.get("b") == 2
    with pytest.raises(KeyError):
        kv.get("a")
    with pytest.raises(ContractError):
        kv.put_record("x" * 257, 1)
    with pytest.raises(ContractError):
        kv.apply({"op": "transfer"})

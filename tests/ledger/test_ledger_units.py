"""Configuration, canonical JSON, Merkle trees, keys and transactions, without a server."""

from __future__ import annotations

import json
import subprocess
import sys
from hashlib import sha256
from pathlib import Path

import pytest

from bsn.ledger import crypto, merkle
from bsn.ledger.canonical import CanonicalError, canonical, loads
from bsn.ledger.config import Config, ConfigError, load
from bsn.ledger.tx import MALFORMED, Rejection, prepare, sign_tx, tx_id_of
from tests.ledger.helpers import ADMIN, NODE_KEY, Key

REPO_ROOT = Path(__file__).resolve().parents[2]


# Configuration.


def test_defaults():
    config = load({})
    assert config == Config(etcd_prefix="/bsn/apps/local/")
    assert (config.host, config.port, config.data_dir, config.contract, config.ordering) == (
        "0.0.0.0",
        8080,
        "/data",
        "kv",
        "solo",
    )
    assert (config.block_max_txs, config.block_max_wait_ms, config.tx_max_age_s) == (500, 20, 300)


def test_values_are_read(tmp_path):
    secret = tmp_path / "node.key"
    secret.write_text(NODE_KEY + "\n")
    token = tmp_path / "bsn_etcd_token"
    token.write_text("handed.token")
    env = {
        "BSN_LEDGER_HOST": "127.0.0.1",
        "BSN_LEDGER_PORT": "9000",
        "BSN_LEDGER_DATA": "/tmp/x",
        "BSN_NODE_ID": "n-1",
        "BSN_APP_ID": "3f2a:app.x",
        "BSN_CONTRACT": "asset",
        "BSN_CONTRACT_PARAMS": '{"issuer": "bank"}',
        "BSN_LEDGER_ACCESS_LOG": "yes",
        "BSN_NODE_PRIVATE_KEY_FILE": str(secret),
        "BSN_ADMIN_PUBLIC_KEY": ADMIN.public,
        "BSN_NODE_KEYS": json.dumps({"n-1": crypto.public_key_of(NODE_KEY)}),
        "BSN_ORDERING": "etcd",
        "BSN_ETCD_ENDPOINTS": "http://a:2379, http://b:2379/",
        "BSN_ETCD_USER": "app-x",
        "BSN_ETCD_PASSWORD": "pw",
        "BSN_ETCD_TOKEN_FILE": str(token),
        "BSN_PEERS": "http://node-b:8080/, http://10.0.0.2:32768",
        "BSN_ETCD_BLOCK_WINDOW": "50",
        "BSN_BLOCK_MAX_TXS": "100",
        "BSN_BLOCK_MAX_WAIT_MS": "5",
        "BSN_TX_MAX_AGE_S": "60",
    }
    config = load(env)
    assert (config.host, config.port, config.node_id, config.app_id, config.contract) == (
        "127.0.0.1",
        9000,
        "n-1",
        "3f2a:app.x",
        "asset",
    )
    assert config.contract_params == {"issuer": "bank"}
    assert config.node_private_key == NODE_KEY
    assert config.etcd_endpoints == ("http://a:2379", "http://b:2379")
    assert config.etcd_prefix == "/bsn/apps/3f2a:app.x/"
    assert (config.etcd_user, config.etcd_password, config.etcd_token) == ("app-x", "pw", "handed.token")
    assert config.peers == ("http://node-b:8080", "http://10.0.0.2:32768")
    assert config.etcd_block_window == 50
    assert (config.block_max_txs, config.block_max_wait_ms, config.tx_max_age_s) == (100, 5, 60)
    assert NODE_KEY not in repr(config) and "pw" not in repr(config) and "handed" not in repr(config)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BSN_LEDGER_PORT", "http", "must be an integer"),
        ("BSN_LEDGER_PORT", "70000", "between 0 and 65535"),
        ("BSN_LEDGER_HOST", " ", "must not be empty"),
        ("BSN_LEDGER_DATA", "", "must not be empty"),
        ("BSN_NODE_ID", "", "BSN_NODE_ID must be"),
        ("BSN_APP_ID", "a b", "BSN_APP_ID must be"),
        ("BSN_CONTRACT", "erc20", "must be one of: asset, dcep, kv, notary, trade_finance;"),
        ("BSN_CONTRACT_PARAMS", "[1]", "must be a JSON object"),
        ("BSN_CONTRACT_PARAMS", '{"x": 1}', "takes no parameters"),
        ("BSN_LEDGER_ACCESS_LOG", "maybe", "must be a boolean"),
        ("BSN_NODE_PRIVATE_KEY", "short", "base64"),
        ("BSN_ADMIN_PUBLIC_KEY", "!!", "base64"),
        ("BSN_NODE_KEYS", '{"n": 1}', "must be a base64 public key"),
        ("BSN_ORDERING", "raft", "must be one of: solo, etcd"),
        ("BSN_ORDERING", "etcd", "BSN_NODE_PRIVATE_KEY"),
        ("BSN_BLOCK_MAX_TXS", "0", "between 1 and"),
        ("BSN_ETCD_ENDPOINTS", "a:2379", "http://host:port"),
        ("BSN_PEERS", "node-b:8080", "BSN_PEERS entries must be http://host:port"),
    ],
)
def test_bad_values_are_refused(name, value, message):
    with pytest.raises(ConfigError, match=message):
        load({name: value})


def test_bad_asset_params_are_refused():
    with pytest.raises(ConfigError, match="issuer must be a user name"):
        load({"BSN_CONTRACT": "asset", "BSN_CONTRACT_PARAMS": '{"issuer": "no spaces"}'})


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
    # The image ships only bsn/__init__.py and bsn/ledger (plus cryptography): importing
    # Django or another third-party package would break it and cost memory in every node.
    code = (
        "import sys; sys.modules['ssl'] = None; import bsn.ledger.server, bsn.ledger.__main__, bsn.ledger.chain; "
        "import bsn.ledger.ordering.solo; "
        "print(sorted(m.split('.')[0] for m, mod in sys.modules.items() if mod))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    top = set(eval(out.stdout))  # noqa: S307 - our own output
    assert not top & {"django", "rest_framework", "celery", "docker", "requests", "ssl", "hypothesis", "yaml"}


# Canonical JSON.


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -(2**70), "ünïcødé ✓", [], {}, {"b": 1, "a": [1, {"d": None, "c": "x"}]}, {"é": "\u2028"}],
)
def test_canonical_round_trips(value):
    data = canonical(value)
    assert loads(data) == value
    assert canonical(loads(data)) == data
    assert data == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_canonical_is_sorted_compact_utf8():
    assert canonical({"b": [1, "é"], "a": None}) == '{"a":null,"b":[1,"é"]}'.encode()


@pytest.mark.parametrize("value", [1.5, 1.0, float("nan"), {"a": [0.1]}, {"a": {"b": float("inf")}}, {1: "x"}, b"x"])
def test_canonical_refuses_floats_and_non_json(value):
    with pytest.raises(CanonicalError):
        canonical(value)


@pytest.mark.parametrize("text", ["1.0", '{"a": 1e3}', "[NaN]", '{"a": Infinity}', "-Infinity"])
def test_loads_refuses_floats(text):
    with pytest.raises(ValueError):
        loads(text)


# Merkle (RFC 6962), against hashes computed by hand.


def _h(data: bytes) -> bytes:
    return sha256(data).digest()


def _leaf(x: bytes) -> bytes:
    return _h(b"\x00" + x)


def _node(a: bytes, b: bytes) -> bytes:
    return _h(b"\x01" + a + b)


L = [b"a", b"b", b"c", b"d", b"e"]


def test_merkle_roots_by_hand():
    a, b, c, d, e = (_leaf(x) for x in L)
    assert merkle.root([]) == _h(b"")
    assert merkle.root(L[:1]) == a
    assert merkle.root(L[:2]) == _node(a, b)
    assert merkle.root(L[:3]) == _node(_node(a, b), c)
    assert merkle.root(L[:5]) == _node(_node(_node(a, b), _node(c, d)), e)


def _reference_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return _h(b"")
    if len(leaves) == 1:
        return _leaf(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return _node(_reference_root(leaves[:k]), _reference_root(leaves[k:]))


def test_merkle_root_matches_the_recursive_definition():
    leaves = [str(i).encode() for i in range(70)]
    for n in range(len(leaves) + 1):
        assert merkle.root(leaves[:n]) == _reference_root(leaves[:n]), n


def test_inclusion_proofs_by_hand_and_verified():
    a, b, c, d, e = (_leaf(x) for x in L)
    assert merkle.inclusion_proof(L[:5], 4) == [_node(_node(a, b), _node(c, d))]
    assert merkle.inclusion_proof(L[:5], 2) == [d, _node(a, b), e]
    assert merkle.inclusion_proof(L[:3], 2) == [_node(a, b)]
    assert merkle.inclusion_proof(L[:1], 0) == []
    for n in range(1, 20):
        leaves = [str(i).encode() for i in range(n)]
        root = merkle.root(leaves)
        for i in range(n):
            proof = merkle.inclusion_proof(leaves, i)
            assert merkle.verify_inclusion(leaves[i], i, n, proof, root)
            assert not merkle.verify_inclusion(b"other", i, n, proof, root)
            if n > 1:
                assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, proof, root)
                assert not merkle.verify_inclusion(leaves[i], i, n, proof[:-1], root)


# Keys and transactions.


def test_keys_sign_and_verify():
    key = crypto.generate_private_key()
    public = crypto.public_key_of(key)
    assert len(crypto.b64decode(public, 32)) == 32
    sig = crypto.sign(key, b"msg")
    assert crypto.verify(public, sig, b"msg")
    assert not crypto.verify(public, sig, b"other")
    assert not crypto.verify(public, "not base64!", b"msg")
    assert not crypto.verify(crypto.public_key_of(crypto.generate_private_key()), sig, b"msg")


def test_signed_envelope_and_tx_id():
    alice = Key("alice")
    env = alice.tx("kv", "put", {"key": "k", "value": "v"})
    assert env.keys() == {"tx", "sig"}
    assert crypto.verify(alice.public, env["sig"], canonical(env["tx"]))
    p = prepare(json.loads(json.dumps(env)))
    assert p.tx_id == tx_id_of(env["tx"]) == sha256(canonical(env["tx"])).hexdigest()
    assert p.leaf == canonical(env)
    assert p.tx_bytes == canonical(env["tx"])


def _env(**tx_changes):
    tx = {
        "app": "a",
        "contract": "kv",
        "function": "put",
        "args": {},
        "signer": "s",
        "nonce": "n",
        "timestamp": 1,
    }
    tx.update(tx_changes)
    return {"tx": {k: v for k, v in tx.items() if v is not ...}, "sig": "AA=="}


@pytest.mark.parametrize(
    "envelope",
    [
        [],
        {"tx": {}},
        {"tx": _env()["tx"], "sig": 1},
        {**_env(), "extra": 1},
        _env(nonce=""),
        _env(nonce="x" * 65),
        _env(timestamp="1"),
        _env(timestamp=1.5),
        _env(timestamp=True),
        _env(args=[]),
        _env(args={"v": 0.5}),
        _env(signer=None),
        _env(extra=1),
        _env(app=...),
    ],
)
def test_malformed_envelopes(envelope):
    with pytest.raises(Rejection) as info:
        prepare(envelope)
    assert info.value.code == MALFORMED


def test_sign_tx_refuses_floats():
    with pytest.raises(CanonicalError):
        sign_tx(_env(args={"v": 1.5})["tx"], crypto.generate_private_key())

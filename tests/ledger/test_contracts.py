"""Each contract's rules, at unit level: validation (bad_arguments) and execution."""

from __future__ import annotations

import json
import re

import pytest

from bsn.ledger.config import ConfigError, load
from bsn.ledger.contracts import (
    CONTRACTS,
    AssetContract,
    BadArguments,
    ConfigContract,
    ContractFailure,
    KVContract,
    NotaryContract,
    TradeFinanceContract,
    build,
    validate_params,
)
from tests.ledger.helpers import Harness, Key

H = "ab" * 32


def test_build_adds_config():
    assert set(build("kv")) == {"kv", "_config"}
    with pytest.raises(ValueError, match="unknown contract"):
        build("erc20")


# The registry


def test_registry_lists_every_template_once_in_order():
    assert list(CONTRACTS) == ["kv", "notary", "asset", "trade_finance", "dcep"]
    assert all(name == cls.name for name, cls in CONTRACTS.items())
    assert [name for name, cls in CONTRACTS.items() if cls.platform_only] == ["dcep"]


GOOD_PARAMS = [
    ("kv", None),
    ("kv", {}),
    ("notary", {}),
    ("asset", {}),
    ("asset", {"issuer": "bank"}),
    ("trade_finance", {}),
    ("dcep", {"central_bank": "pboc"}),
]
BAD_PARAMS = [
    ("erc20", {}, "unknown contract 'erc20'; one of: asset, dcep, kv, notary, trade_finance"),
    ("kv", {"owner": "acme"}, "contract 'kv' takes no parameters"),
    ("kv", [1], "contract params must be an object"),
    ("asset", {"issuer": 5}, "issuer must be a user name"),
    ("asset", {"issuer": "bank", "supply": 5}, "unknown supply"),
    ("dcep", {}, "central_bank is required"),
    ("dcep", {"central_bank": "no spaces"}, "central_bank is required"),
    ("dcep", {"central_bank": "pboc", "reserve": 1}, "unknown reserve"),
]


@pytest.mark.parametrize(("template", "params"), GOOD_PARAMS)
def test_validate_params_accepts_what_a_node_starts_with(template, params):
    assert validate_params(template, params) is None
    env = {"BSN_CONTRACT": template}
    if params is not None:
        env["BSN_CONTRACT_PARAMS"] = json.dumps(params)
    assert load(env).contract == template


@pytest.mark.parametrize(("template", "params", "message"), BAD_PARAMS)
def test_validate_params_refuses_what_a_node_would_refuse(template, params, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_params(template, params)
    # The node would not start with them either: the API's check is the node's check.
    with pytest.raises(ConfigError):
        load({"BSN_CONTRACT": template, "BSN_CONTRACT_PARAMS": json.dumps(params)})


# kv


def test_kv_put_get_delete():
    kv = Harness(KVContract())
    kv.run("alice", "put", {"key": "k", "value": {"a": [1]}})
    assert kv.query("get", {"key": "k"}) == {"a": [1]}
    kv.run("alice", "delete", {"key": "k"})
    assert kv.query("get", {"key": "k"}) is None
    with pytest.raises(ContractFailure, match="does not exist"):
        kv.run("alice", "delete", {"key": "k"})


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("put", {"key": "k"}),
        ("put", {"key": "k", "value": 1, "x": 2}),
        ("put", {"key": "", "value": 1}),
        ("put", {"key": "a\nb", "value": 1}),
        ("put", {"key": "k" * 257, "value": 1}),
        ("put", {"key": 1, "value": 1}),
        ("put", {"key": "k", "value": None}),
        ("delete", {}),
    ],
)
def test_kv_bad_arguments(function, args):
    with pytest.raises(BadArguments):
        KVContract().validate(function, args, "alice")


# notary


def test_notary_register_and_lookup():
    notary = Harness(NotaryContract())
    result, events = notary.run("alice", "register", {"hash": H, "metadata": {"file": "a.pdf"}})
    assert result == {
        "hash": H,
        "owner": "alice",
        "time": 1001,
        "metadata": {"file": "a.pdf"},
        "height": 1,
        "tx_id": "tx1",
    }
    assert events == [{"name": "registered", "payload": {"hash": H, "owner": "alice"}}]
    assert notary.query("lookup", {"hash": H})["owner"] == "alice"
    with pytest.raises(ContractFailure, match="already registered"):
        notary.run("bob", "register", {"hash": H, "metadata": {}})
    assert notary.query("lookup", {"hash": "cd" * 32}) is None


@pytest.mark.parametrize(
    "args",
    [{"hash": "ab", "metadata": {}}, {"hash": "AB" * 32, "metadata": {}}, {"hash": H, "metadata": []}, {"hash": H}],
)
def test_notary_bad_arguments(args):
    with pytest.raises(BadArguments):
        NotaryContract().validate("register", args, "alice")


# asset


def test_asset_issue_transfer_balance():
    asset = Harness(AssetContract({"issuer": "bank"}))
    _, events = asset.run("bank", "issue", {"to": "alice", "amount": 100})
    assert events == [{"name": "issued", "payload": {"to": "alice", "amount": 100}}]
    result, events = asset.run("alice", "transfer", {"to": "bob", "amount": 30})
    assert result == {"balance": 70}
    assert events[0]["payload"] == {"from": "alice", "to": "bob", "amount": 30}
    assert (asset.query("balance", {"holder": "alice"}), asset.query("balance", {"holder": "bob"})) == (70, 30)
    asset.run("bob", "transfer", {"to": "alice", "amount": 30})
    assert "bob" not in asset.state  # a zero balance is removed
    assert asset.query("balance", {"holder": "bob"}) == 0


def test_asset_forbidden_paths():
    asset = Harness(AssetContract({"issuer": "bank"}))
    with pytest.raises(ContractFailure, match="only the issuer"):
        asset.run("alice", "issue", {"to": "alice", "amount": 1})
    asset.run("bank", "issue", {"to": "alice", "amount": 10})
    with pytest.raises(ContractFailure, match="insufficient balance"):
        asset.run("alice", "transfer", {"to": "bob", "amount": 11})
    with pytest.raises(ContractFailure, match="insufficient balance"):
        asset.run("carol", "transfer", {"to": "bob", "amount": 1})
    asset.run("bank", "issue", {"to": "alice", "amount": 2**63 - 11})
    with pytest.raises(ContractFailure, match="maximum"):
        asset.run("bank", "issue", {"to": "alice", "amount": 1})
    assert asset.state == {"alice": 2**63 - 1}


def test_asset_without_issuer_refuses_every_issue():
    with pytest.raises(ContractFailure, match="no issuer"):
        Harness(AssetContract()).run("alice", "issue", {"to": "alice", "amount": 1})


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("issue", {"to": "bob", "amount": 0}),
        ("issue", {"to": "bob", "amount": -5}),
        ("issue", {"to": "bob", "amount": "5"}),
        ("issue", {"to": "bob", "amount": True}),
        ("issue", {"to": "bob", "amount": 2**63}),
        ("issue", {"to": "no spaces", "amount": 5}),
        ("transfer", {"to": "alice", "amount": 5}),  # to yourself
        ("transfer", {"to": "bob"}),
    ],
)
def test_asset_bad_arguments(function, args):
    with pytest.raises(BadArguments):
        AssetContract({"issuer": "bank"}).validate(function, args, "alice")


def test_asset_params_are_checked():
    with pytest.raises(ValueError, match="unknown"):
        AssetContract({"issuer": "bank", "supply": 5})


# trade_finance

LC = {
    "lc_id": "LC-1",
    "applicant": "buyer",
    "beneficiary": "seller",
    "amount": 5000,
    "currency": "EUR",
    "documents_required": ["invoice", "bill_of_lading"],
}


def test_letter_of_credit_happy_path_emits_every_event():
    tf = Harness(TradeFinanceContract())
    names = []
    for signer, function, args in [
        ("bank", "issue", LC),
        ("seller", "present", {"lc_id": "LC-1", "documents": ["invoice"]}),
        ("bank", "reject", {"lc_id": "LC-1", "reason": "bill of lading missing"}),
        ("seller", "present", {"lc_id": "LC-1", "documents": ["invoice", "bill_of_lading"]}),
        ("bank", "accept", {"lc_id": "LC-1"}),
        ("bank", "pay", {"lc_id": "LC-1"}),
    ]:
        _, events = tf.run(signer, function, args)
        names += [e["name"] for e in events]
    assert names == ["issued", "presented", "rejected", "presented", "accepted", "paid"]
    status = tf.query("status", {"lc_id": "LC-1"})
    assert status["status"] == "paid"
    assert status["issuing_bank"] == "bank"
    assert status["documents"] == ["invoice", "bill_of_lading"]


@pytest.mark.parametrize(
    ("steps", "match"),
    [
        ([("bank", "pay", {"lc_id": "LC-1"})], "cannot pay a letter of credit that is issued"),
        ([("bank", "accept", {"lc_id": "LC-1"})], "cannot accept"),
        ([("buyer", "present", {"lc_id": "LC-1", "documents": []})], "only the beneficiary"),
        (
            [("seller", "present", {"lc_id": "LC-1", "documents": []}), ("seller", "accept", {"lc_id": "LC-1"})],
            "only the issuing bank",
        ),
        ([("seller", "present", {"lc_id": "LC-1", "documents": []}), ("bank", "pay", {"lc_id": "LC-1"})], "cannot pay"),
        ([("bank", "issue", LC)], "already exists"),
        ([("bank", "accept", {"lc_id": "LC-2"})], "does not exist"),
    ],
)  # fmt: skip
def test_letter_of_credit_wrong_role_or_order_fails(steps, match):
    tf = Harness(TradeFinanceContract())
    tf.run("bank", "issue", LC)
    *before, last = steps
    for step in before:
        tf.run(*step)
    state = dict(tf.state)
    with pytest.raises(ContractFailure, match=match):
        tf.run(*last)
    assert tf.state == state


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("issue", {**LC, "currency": "euro"}),
        ("issue", {**LC, "amount": 0}),
        ("issue", {**LC, "documents_required": "invoice"}),
        ("issue", {**LC, "lc_id": "has space"}),
        ("issue", {k: v for k, v in LC.items() if k != "beneficiary"}),
        ("present", {"lc_id": "LC-1", "documents": [1]}),
        ("reject", {"lc_id": "LC-1", "reason": ""}),
    ],
)
def test_letter_of_credit_bad_arguments(function, args):
    with pytest.raises(BadArguments):
        TradeFinanceContract().validate(function, args, "bank")


# _config


def test_config_users():
    cfg = Harness(ConfigContract())
    alice = Key("alice")
    _, events = cfg.run("_admin", "user.add", {"name": "alice", "public_key": alice.public})
    assert events == [{"name": "user_added", "payload": {"name": "alice"}}]
    assert cfg.state == {"alice": alice.public}
    with pytest.raises(ContractFailure, match="already exists"):
        cfg.run("_admin", "user.add", {"name": "alice", "public_key": alice.public})
    cfg.run("_admin", "user.revoke", {"name": "alice"})
    assert cfg.state == {}
    with pytest.raises(ContractFailure, match="does not exist"):
        cfg.run("_admin", "user.revoke", {"name": "alice"})


@pytest.mark.parametrize(
    ("signer", "function", "args", "match"),
    [
        ("alice", "user.add", {"name": "bob", "public_key": Key("x").public}, "only _admin"),
        ("_admin", "user.add", {"name": "_admin", "public_key": Key("x").public}, "reserved"),
        ("_admin", "user.add", {"name": "bad name", "public_key": Key("x").public}, "user name"),
        ("_admin", "user.add", {"name": "bob", "public_key": "AAAA"}, "32-byte"),
        ("_admin", "user.revoke", {"name": "_admin"}, "reserved"),
        ("_admin", "user.revoke", {"name": "bob", "x": 1}, "unexpected x"),
    ],
)
def test_config_bad_arguments(signer, function, args, match):
    with pytest.raises(BadArguments, match=match):
        ConfigContract().validate(function, args, signer)

"""The ledger core in process: blocks, verification, receipts, users, determinism."""

from __future__ import annotations

import copy
import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsn.ledger import crypto
from bsn.ledger.block import GENESIS_PREV, BlockInvalid, verify_chain
from bsn.ledger.chain import ChainError, LedgerCore
from bsn.ledger.ordering.solo import SoloOrderer
from bsn.ledger.tx import Rejection, now_ms
from tests.ledger.helpers import ADMIN, Key, add_user, commit, core_config, open_core, revoke_user

ALICE, BOB = Key("alice"), Key("bob")


@pytest.fixture
def core(tmp_path):
    core = open_core(tmp_path / "a")
    commit(core, [add_user(ALICE), add_user(BOB)])
    yield core
    core.close()


def foreign(block: dict) -> dict:
    """The block as another node would receive it: plain JSON, nothing cached."""
    return json.loads(json.dumps(block))


def test_blocks_link_and_verify(core):
    commit(core, [ALICE.tx("kv", "put", {"key": "a", "value": 1})])
    blocks = [core.block(h) for h in (1, 2)]
    assert blocks[0]["header"]["prev_hash"] == GENESIS_PREV
    assert blocks[1]["header"]["prev_hash"] == blocks[0]["hash"]
    assert blocks[1]["header"]["proposer"] == "node-1"
    assert verify_chain(blocks, core.node_keys, app="app-1") == 2
    assert core.info()["users"] == ["alice", "bob"]


def test_receipts_carry_results_and_events(tmp_path):
    core = open_core(tmp_path / "tf", contract="trade_finance")
    bank, seller = Key("bank"), Key("seller")
    commit(core, [add_user(bank), add_user(seller)])
    lc = {
        "lc_id": "LC-9",
        "applicant": "buyer",
        "beneficiary": "seller",
        "amount": 10,
        "currency": "USD",
        "documents_required": ["invoice"],
    }
    issued, pay_too_early = commit(
        core, [bank.tx("trade_finance", "issue", lc), bank.tx("trade_finance", "pay", {"lc_id": "LC-9"})]
    )
    assert issued["status"] == "committed"
    assert issued["events"] == [
        {"name": "issued", "payload": {"lc_id": "LC-9", "issuing_bank": "bank", "beneficiary": "seller"}}
    ]
    assert issued["result"]["status"] == "issued"
    assert (issued["height"], issued["index"]) == (2, 0)
    assert pay_too_early["status"] == "failed"
    assert "cannot pay" in pay_too_early["error"]
    assert (pay_too_early["events"], pay_too_early["result"], pay_too_early["index"]) == ([], None, 1)
    assert core.receipt(issued["tx_id"]) == issued
    receipt, envelope = core.transaction(issued["tx_id"])
    assert receipt == issued and envelope["tx"]["args"] == lc
    core.close()


def test_failed_tx_leaves_state_but_consumes_its_nonce(core):
    failing = ALICE.tx("kv", "delete", {"key": "missing"})
    root = core.state_root
    [receipt] = commit(core, [failing])
    assert receipt["status"] == "failed"
    assert core.state_root != root  # a block always advances the root (empty write set)
    again = ALICE.tx("kv", "put", {"key": "x", "value": 1}, nonce=failing["tx"]["nonce"])
    with pytest.raises(Rejection, match="replayed_nonce"):
        core.precheck(again)


def test_same_envelope_twice_is_not_a_replay(core):
    env = ALICE.tx("kv", "put", {"key": "a", "value": 1})
    assert core.precheck(env).fresh
    assert not core.precheck(copy.deepcopy(env)).fresh  # pending: wait for the same receipt
    block = core.make_block([env], now_ms())
    core.apply_committed(block)
    assert not core.precheck(copy.deepcopy(env)).fresh  # committed: its receipt is there


def test_make_block_drops_duplicate_nonces_with_a_rejection(core):
    first = ALICE.tx("kv", "put", {"key": "a", "value": 1}, nonce="same")
    second = ALICE.tx("kv", "put", {"key": "a", "value": 2}, nonce="same")
    # Two nodes each prechecked one of them; the proposer sees both (as plain dicts).
    block = core.make_block([foreign(first), foreign(second)], now_ms())
    assert block["header"]["tx_count"] == 1
    core.apply_committed(block)
    assert core.value("kv", "a") == 1
    later = core.make_block([foreign(second)], now_ms())
    assert later["header"]["tx_count"] == 0


def test_make_block_leaves_out_bad_signatures_and_unknown_signers(core):
    env = ALICE.tx("kv", "put", {"key": "a", "value": 1})
    forged = {"tx": {**env["tx"], "nonce": "other"}, "sig": env["sig"]}
    stranger = Key("carol").tx("kv", "put", {"key": "a", "value": 1})
    mine = core.precheck(ALICE.tx("kv", "put", {"key": "b", "value": 1}))
    block = core.make_block([forged, stranger, mine.envelope], now_ms())
    assert [e["tx"]["args"]["key"] for e in block["txs"]] == ["b"]
    receipts = core.wait_receipts([mine.tx_id], 0.01)
    assert receipts == [None]


# Verification of blocks from elsewhere.


@pytest.fixture
def pair(tmp_path):
    """Two cores of the same app; the second only follows the first's blocks."""
    leader = open_core(tmp_path / "leader")
    follower = open_core(tmp_path / "follower", node_id="node-2", node_private_key=crypto.generate_private_key(),
                         node_keys={"node-1": crypto.public_key_of(leader.private_key)})  # fmt: skip
    follower.node_keys["node-1"] = leader.public_key
    yield leader, follower
    leader.close()
    follower.close()


def test_follower_applies_the_leaders_blocks(pair):
    leader, follower = pair
    for envs in ([add_user(ALICE)], [ALICE.tx("kv", "put", {"key": "k", "value": [1]})]):
        block = leader.make_block(envs, now_ms())
        leader.apply_committed(block)
        follower.apply_committed(foreign(block))
        assert follower.apply_committed(foreign(block)) == leader.apply_committed(block)  # idempotent
    assert (follower.height, follower.head_hash, follower.state_root) == (
        leader.height,
        leader.head_hash,
        leader.state_root,
    )


def _signed_by_someone_else(block):
    return crypto.sign(crypto.generate_private_key(), bytes.fromhex(block["hash"]))


def _tampered(block, change):
    block = foreign(block)
    change(block)
    return block


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda b: b["txs"][0]["tx"]["args"].update(value=2), "Merkle root"),
        (lambda b: b["txs"][0].update(sig=b["txs"][1]["sig"]), "Merkle root"),
        (lambda b: b["header"].update(timestamp=b["header"]["timestamp"] + 1), "hash does not match"),
        (lambda b: b.update(signature=_signed_by_someone_else(b)), "signature"),
        (lambda b: b["header"].update(proposer="node-9"), "hash does not match"),
        (lambda b: b["txs"].pop(), "tx_count"),
        (lambda b: b.update(extra=1), "exactly"),
    ],
)  # fmt: skip
def test_tampered_blocks_are_refused(pair, change, match):
    leader, follower = pair
    block = leader.make_block(
        [add_user(ALICE), ADMIN.tx("_config", "user.add", {"name": "bob", "public_key": BOB.public})], now_ms()
    )
    with pytest.raises(BlockInvalid, match=match):
        follower.apply_committed(_tampered(block, change))
    assert follower.height == 0
    follower.apply_committed(foreign(block))  # the genuine block still applies
    assert follower.height == 1


def _resign(leader, block):
    """Re-hash and re-sign a modified block as the leader would (valid proposer signature)."""
    from hashlib import sha256

    from bsn.ledger import merkle
    from bsn.ledger.canonical import canonical

    block["header"]["merkle_root"] = merkle.root([canonical(e) for e in block["txs"]]).hex()
    block["header"]["tx_count"] = len(block["txs"])
    digest = sha256(canonical(block["header"])).digest()
    block["hash"] = digest.hex()
    block["signature"] = crypto.sign(leader.private_key, digest)
    return block


def test_a_signed_block_with_a_forged_tx_is_refused(pair):
    leader, follower = pair
    block = foreign(leader.make_block([add_user(ALICE)], now_ms()))
    env = block["txs"][0]
    env["tx"]["args"]["name"] = "mallory"
    with pytest.raises(BlockInvalid, match="signature does not verify"):
        follower.apply_committed(_resign(leader, block))


def test_a_signed_block_with_a_replayed_nonce_is_refused(pair):
    leader, follower = pair
    env = add_user(ALICE)
    with pytest.raises(BlockInvalid, match="replayed_nonce"):
        follower.apply_committed(_resign(leader, {**foreign(leader.make_block([env], now_ms())), "txs": [env, env]}))


def test_wrong_prev_hash_and_gaps_are_refused(pair):
    leader, follower = pair
    first = leader.make_block([add_user(ALICE)], now_ms())
    leader.apply_committed(first)
    second = leader.make_block([ALICE.tx("kv", "put", {"key": "a", "value": 1})], now_ms())
    with pytest.raises(BlockInvalid, match="does not follow"):
        follower.apply_committed(foreign(second))
    follower.apply_committed(foreign(first))
    bad = foreign(second)
    bad["header"]["prev_hash"] = "1" * 64
    with pytest.raises(BlockInvalid, match="prev_hash"):
        follower.apply_committed(_resign(leader, bad))
    other_first = _resign(leader, {**foreign(first), "txs": [add_user(BOB)]})
    with pytest.raises(BlockInvalid, match="conflicts"):
        follower.apply_committed(other_first)


def test_unknown_proposer_is_refused(pair, tmp_path):
    _, follower = pair
    rogue = open_core(tmp_path / "rogue", node_id="node-9", node_private_key=crypto.generate_private_key())
    with pytest.raises(BlockInvalid, match="not one of the app's nodes"):
        follower.apply_committed(foreign(rogue.make_block([add_user(ALICE)], now_ms())))
    rogue.close()


# Users.


def test_user_changes_take_effect_from_the_next_block(core):
    carol = Key("carol")
    with pytest.raises(Rejection, match="unknown_signer"):
        core.precheck(carol.tx("kv", "put", {"key": "a", "value": 1}))
    commit(core, [add_user(carol)])
    commit(core, [carol.tx("kv", "put", {"key": "a", "value": 1})])
    # Revoked in a block: a tx admitted before still runs in that same block, not after.
    admitted = core.precheck(carol.tx("kv", "put", {"key": "b", "value": 1}))
    late = core.precheck(carol.tx("kv", "put", {"key": "c", "value": 1}))
    revoke = core.precheck(revoke_user("carol"))
    block = core.make_block([revoke.envelope, admitted.envelope], now_ms())
    assert len(core.apply_committed(block)) == 2
    assert core.value("kv", "b") == 1
    assert core.make_block([late.envelope], now_ms())["header"]["tx_count"] == 0
    assert core.receipt(late.tx_id)["error"] == "unknown_signer"
    with pytest.raises(Rejection, match="unknown_signer"):
        core.precheck(carol.tx("kv", "put", {"key": "d", "value": 1}))


# Replay and start-up verification.


def test_replay_rebuilds_identical_state(tmp_path, core):
    commit(core, [ALICE.tx("kv", "put", {"key": f"k{i}", "value": i}) for i in range(20)])
    expected = (core.height, core.head_hash, core.state_root, core.state.dump(), core.state.all_receipts())
    core.close()
    again = open_core(core.config.data_dir)
    assert (again.height, again.head_hash, again.state_root, again.state.dump(), again.state.all_receipts()) == expected
    again.close()


def test_a_node_key_that_does_not_sign_the_chain_refuses_it(tmp_path, core):
    core.close()
    with pytest.raises(ChainError, match="does not verify"):
        open_core(core.config.data_dir, node_private_key=crypto.generate_private_key())


def test_solo_node_key_is_generated_once_in_the_data_dir(tmp_path):
    first = open_core(tmp_path / "solo", node_private_key=None)
    key = (tmp_path / "solo" / "node.key").read_text().strip()
    assert first.private_key == key
    assert (tmp_path / "solo" / "node.key").stat().st_mode & 0o777 == 0o600
    first.close()
    second = open_core(tmp_path / "solo", node_private_key=None)
    assert second.public_key == first.public_key
    second.close()


def test_mismatching_node_keys_are_refused(tmp_path):
    core = LedgerCore(core_config(str(tmp_path / "x"), node_keys={"node-1": Key("other").public}))
    with pytest.raises(ChainError, match="does not match"):
        core.open()


# The solo orderer end to end, with waiters on other threads.


def test_solo_orderer_commits_and_wakes_waiters(tmp_path):
    core = open_core(tmp_path / "o", block_max_txs=50, block_max_wait_ms=5)
    orderer = SoloOrderer(core.config)
    orderer.start(core)
    try:
        admin = core.precheck(add_user(ALICE))
        orderer.submit([admin.envelope])
        assert core.wait_receipt(admin.tx_id, 5)["status"] == "committed"
        results = []

        def client(i):
            ps = [core.precheck(ALICE.tx("kv", "put", {"key": f"{i}-{j}", "value": j})) for j in range(30)]
            orderer.submit([p.envelope for p in ps])
            results.append(core.wait_receipts([p.tx_id for p in ps], 10))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r["status"] == "committed" for rs in results for r in rs) == 240
        assert all(b["header"]["tx_count"] <= 50 for b in (core.block(h) for h in range(1, core.height + 1)))
    finally:
        orderer.stop()
        core.close()


# Determinism: any sequence of transactions gives the same state root everywhere.

USERS = [Key(f"u{i}") for i in range(3)]
ISSUER = Key("bank")

_user = st.sampled_from(USERS)
_name = st.sampled_from([u.name for u in USERS] + ["stranger"])
_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
_key = st.sampled_from("abc")
_kv = st.one_of(
    st.tuples(
        _user, st.just("put"), st.fixed_dictionaries({"key": _key, "value": _value.filter(lambda v: v is not None)})
    ),
    st.tuples(_user, st.just("delete"), st.fixed_dictionaries({"key": _key})),
)
_asset = st.one_of(
    st.tuples(st.just(ISSUER), st.just("issue"), st.fixed_dictionaries({"to": _name, "amount": st.integers(1, 50)})),
    st.tuples(_user, st.just("transfer"), st.fixed_dictionaries({"to": _name, "amount": st.integers(1, 60)})),
)  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    contract=st.sampled_from(["kv", "asset"]),
    data=st.data(),
    cuts=st.lists(st.integers(1, 6), min_size=1, max_size=8),
)
def test_same_blocks_give_the_same_state_root_everywhere(tmp_path_factory, contract, data, cuts):
    steps = data.draw(st.lists(_kv if contract == "kv" else _asset, min_size=1, max_size=30))
    base = tmp_path_factory.mktemp("prop")
    params = {"issuer": "bank"} if contract == "asset" else {}
    one = open_core(base / "one", contract=contract, contract_params=params)
    two = open_core(base / "two", contract=contract, contract_params=params, node_id="node-2",
                    node_private_key=crypto.generate_private_key(), node_keys={"node-1": one.public_key})  # fmt: skip
    setup = [add_user(u) for u in [*USERS, ISSUER]]
    envelopes = setup + [
        signer.tx(contract, fn, args)
        for signer, fn, args in steps
        if not (fn == "transfer" and args["to"] == signer.name)
    ]
    blocks, i, c = [], 0, 0
    while i < len(envelopes):
        size = len(setup) if i == 0 else cuts[c % len(cuts)]
        c += 1
        block = one.make_block(envelopes[i : i + size], now_ms())
        one.apply_committed(block)
        blocks.append(foreign(block))
        i += size
    for block in blocks:
        two.apply_committed(block)
    assert (two.height, two.head_hash, two.state_root) == (one.height, one.head_hash, one.state_root)
    expected = (one.height, one.state_root, one.state.dump())
    assert two.state.dump() == expected[2]
    one.close()
    replayed = open_core(base / "one", contract=contract, contract_params=params)
    assert (replayed.height, replayed.state_root, replayed.state.dump()) == expected
    replayed.close()
    for name in ("state.sqlite", "state.sqlite-wal", "state.sqlite-shm"):  # rebuilt from the blocks alone
        (base / "one" / name).unlink(missing_ok=True)
    rebuilt = open_core(base / "one", contract=contract, contract_params=params)
    assert (rebuilt.height, rebuilt.state_root, rebuilt.state.dump()) == expected
    rebuilt.close()
    two.close()

"""``GET /events``: the contract events of committed blocks, against a real node process."""

from __future__ import annotations

import pytest

from bsn.ledger import server
from bsn.ledger.tx import tx_id_of
from tests.ledger.helpers import Key, add_user, commit, open_core

BANK, SELLER = Key("bank"), Key("seller")
LC = {
    "applicant": "buyer",
    "beneficiary": "seller",
    "amount": 100_000,
    "currency": "CNY",
    "documents_required": ["invoice"],
}


@pytest.fixture
def tf_node(make_node):
    node = make_node(BSN_CONTRACT="trade_finance").start()
    assert node.batch([add_user(BANK), add_user(SELLER)]).status == 200
    return node


def events(node, query: str = ""):
    reply = node.request("GET", "/events" + query)
    assert reply.verified, "the answer carries the node's reply MAC"
    return reply


def test_events_of_committed_transactions_in_chain_order(tf_node):
    issue = BANK.tx("trade_finance", "issue", {"lc_id": "LC-1", **LC})
    assert tf_node.submit(issue).json()["status"] == "committed"
    present = SELLER.tx("trade_finance", "present", {"lc_id": "LC-1", "documents": ["invoice"]})
    wrong = SELLER.tx("trade_finance", "accept", {"lc_id": "LC-1"})  # wrong role: failed, no event
    accept = BANK.tx("trade_finance", "accept", {"lc_id": "LC-1"})
    receipts = tf_node.batch([present, wrong]).json()["receipts"]
    assert [r["status"] for r in receipts] == ["committed", "failed"]
    assert tf_node.submit(accept).json()["status"] == "committed"

    body = events(tf_node).json()
    head = tf_node.chain()["height"]
    assert body["height"] == head and body["next_after"] == head
    config = [e for e in body["events"] if e["contract"] == "_config"]
    assert [(e["name"], e["payload"]["name"]) for e in config] == [("user_added", "bank"), ("user_added", "seller")]
    body["events"] = [e for e in body["events"] if e["contract"] == "trade_finance"]
    got = [(e["name"], e["function"], e["signer"], e["tx_id"]) for e in body["events"]]
    assert got == [
        ("issued", "issue", "bank", tx_id_of(issue["tx"])),
        ("presented", "present", "seller", tx_id_of(present["tx"])),
        ("accepted", "accept", "bank", tx_id_of(accept["tx"])),
    ]
    first = body["events"][0]
    assert first.keys() == {
        "height", "index", "seq", "tx_id", "contract", "function", "signer", "name", "payload", "block_time_ms",
    }  # fmt: skip
    assert first["payload"] == {"lc_id": "LC-1", "issuing_bank": "bank", "beneficiary": "seller"}
    block = tf_node.request("GET", f"/blocks/{first['height']}").json()
    assert first["block_time_ms"] == block["header"]["timestamp"]
    assert block["txs"][first["index"]] == issue and first["seq"] == 0
    presented = body["events"][1]
    assert (presented["height"], presented["index"]) == (receipts[0]["height"], receipts[0]["index"])

    # From a cursor: only what came after it; past the head: nothing, the cursor stays.
    later = events(tf_node, f"?after={first['height']}").json()
    assert [e["name"] for e in later["events"]] == ["presented", "accepted"]
    beyond = events(tf_node, f"?after={head + 5}").json()
    assert beyond == {"height": head, "events": [], "next_after": head + 5}


def test_limit_counts_blocks_and_next_after_resumes(tf_node):
    for n in range(5):
        tf_node.submit(BANK.tx("trade_finance", "issue", {"lc_id": f"LC-{n}", **LC}))
    head = tf_node.chain()["height"]
    seen, after, pages = [], 0, 0
    while after < head:
        body = events(tf_node, f"?after={after}&limit=2").json()
        assert body["next_after"] - after <= 2
        seen += [e["payload"]["lc_id"] for e in body["events"] if e["contract"] == "trade_finance"]
        after = body["next_after"]
        pages += 1
    assert seen == [f"LC-{n}" for n in range(5)]
    assert pages == (head + 1) // 2


def test_a_block_range_is_cut_after_the_block_that_passes_the_byte_bound(tmp_path):
    core = open_core(tmp_path / "core", contract="trade_finance")
    commit(core, [add_user(BANK), add_user(SELLER)])
    commit(core, [BANK.tx("trade_finance", "issue", {"lc_id": "LC-big", **LC})])
    for _ in range(3):
        commit(core, [SELLER.tx("trade_finance", "present", {"lc_id": "LC-big", "documents": ["invoice"]})])
        commit(core, [BANK.tx("trade_finance", "reject", {"lc_id": "LC-big", "reason": "x" * 900})])
    head = core.height
    assert head == 8
    whole = core.events(0, 1000, server.EVENTS_MAX_BYTES)
    assert (whole[0], whole[2], len(whole[1])) == (head, head, 2 + 7)  # 2 user_added
    # A bound smaller than one block: one block per answer, never zero (no reader is stuck).
    assert core.events(0, 1000, 10)[2] == 1
    # ~1 KiB per reject block: a 2 KiB bound stops once it is passed, on a block boundary.
    _, part, next_after = core.events(2, 1000, 2048)
    assert 3 <= next_after < head
    assert {e["height"] for e in part} == set(range(3, next_after + 1))
    core.close()


@pytest.mark.parametrize(
    "query",
    ["?after=-1", "?after=x", "?limit=0", "?limit=1001", "?after=1&after=2", "?from=1", "?after=01"],
)
def test_bad_queries_are_refused(tf_node, query):
    reply = events(tf_node, query)
    assert reply.status == 400 and reply.json()["error"] == "malformed", reply.body


def test_events_need_the_node_credential(tf_node):
    reply = tf_node.request("GET", "/events", signed=False)
    assert reply.status == 401
    assert tf_node.request("POST", "/events", {}).status == 405

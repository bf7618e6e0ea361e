"""The ``dcep`` contract (tier 1: operator allocations at the central bank, in fen).

Execution through a core with signed transactions, every refusal at unit level, and a
Hypothesis property: Σ allocations == issued − withdrawn, none negative, after every tx.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bsn.ledger.contracts import BadArguments, ContractFailure, DcepContract
from bsn.ledger.contracts.base import MAX_INT
from bsn.ledger.tx import Rejection
from tests.ledger.helpers import Harness, Key, add_user, commit, open_core

CB = "pboc"
ROOT = "0f" * 32
PBOC, ICBC = Key(CB), Key("icbc")


def dcep() -> Harness:
    return Harness(DcepContract({"central_bank": CB}))


def issue(operator: str, amount: int, ref: str = "t2-1") -> dict:
    return {"operator": operator, "amount": amount, "ref": ref}


def settle(batch_id: str, positions: dict, *, root: str = ROOT, count: int = 3) -> dict:
    return {"batch_id": batch_id, "positions": positions, "merkle_root": root, "transfer_count": count}


# Through a core: signed transactions, blocks, receipts, queries.


@pytest.fixture
def core(tmp_path):
    core = open_core(tmp_path / "dcep", contract="dcep", contract_params={"central_bank": CB})
    commit(core, [add_user(PBOC), add_user(ICBC)])
    yield core
    core.close()


def test_issue_withdraw_settle_through_signed_transactions(core):
    issued, withdrawn, settled = commit(
        core,
        [
            PBOC.tx("dcep", "issue", issue("icbc", 10_000, "cnaps-0001")),
            PBOC.tx("dcep", "withdraw", issue("icbc", 2_500, "cnaps-0002")),
            PBOC.tx("dcep", "settle", settle("2026-11-30:001", {"icbc": -1_000, "boc": 1_000, "ccb": 0})),
        ],
    )
    assert [r["status"] for r in (issued, withdrawn, settled)] == ["committed"] * 3
    assert issued["result"] == {"operator": "icbc", "allocation": 10_000}
    assert issued["events"] == [
        {"name": "issued", "payload": {"operator": "icbc", "amount": 10_000, "ref": "cnaps-0001"}}
    ]
    assert withdrawn["result"] == {"operator": "icbc", "allocation": 7_500}
    assert withdrawn["events"] == [
        {"name": "withdrawn", "payload": {"operator": "icbc", "amount": 2_500, "ref": "cnaps-0002"}}
    ]
    assert settled["result"] == {"batch_id": "2026-11-30:001", "allocations": {"boc": 1_000, "icbc": 6_500}}
    assert settled["events"] == [
        {"name": "settled", "payload": {"batch_id": "2026-11-30:001", "merkle_root": ROOT, "transfer_count": 3}}
    ]

    assert core.query("dcep", "allocation", {"operator": "icbc"}) == 6_500
    assert core.query("dcep", "allocation", {"operator": "ccb"}) == 0  # a zero position registers nobody
    assert core.query("dcep", "supply", {}) == {
        "issued": 10_000,
        "withdrawn": 2_500,
        "allocations": {"boc": 1_000, "icbc": 6_500},
    }
    block = core.block(settled["height"])
    assert core.query("dcep", "batch", {"batch_id": "2026-11-30:001"}) == {
        "batch_id": "2026-11-30:001",
        "positions": {"boc": 1_000, "ccb": 0, "icbc": -1_000},
        "merkle_root": ROOT,
        "transfer_count": 3,
        "height": settled["height"],
        "tx_id": settled["tx_id"],
        "time": block["header"]["timestamp"],
    }
    assert core.query("dcep", "batch", {"batch_id": "2026-11-30:002"}) is None
    # The documented state keys, as GET /state/dcep/{key} reads them.
    assert core.value("dcep", "op:icbc") == 6_500
    assert core.value("dcep", "_totals") == {"issued": 10_000, "withdrawn": 2_500}
    assert core.value("dcep", "_operators") == ["boc", "icbc"]
    assert core.value("dcep", "batch:2026-11-30:001")["tx_id"] == settled["tx_id"]


def test_state_rules_fail_in_the_block_and_change_nothing(core):
    commit(core, [PBOC.tx("dcep", "issue", issue("icbc", 100))])
    root, supply = core.state_root, core.query("dcep", "supply", {})
    receipts = commit(
        core,
        [
            ICBC.tx("dcep", "issue", issue("icbc", 1)),
            PBOC.tx("dcep", "withdraw", issue("icbc", 101)),
            PBOC.tx("dcep", "settle", settle("b-1", {"icbc": -101, "boc": 101})),
        ],
    )
    assert [r["status"] for r in receipts] == ["failed"] * 3
    assert "only the central bank pboc may issue" in receipts[0]["error"]
    assert "insufficient allocation: icbc has 100, withdrawing 101" in receipts[1]["error"]
    assert "insufficient allocation: icbc has 100" in receipts[2]["error"]
    assert all(r["events"] == [] for r in receipts)
    assert core.query("dcep", "supply", {}) == supply
    assert core.query("dcep", "batch", {"batch_id": "b-1"}) is None
    assert core.state_root != root  # the block still advanced the chain


@pytest.mark.parametrize(
    ("function", "args", "code"),
    [
        ("issue", issue("icbc", 0), "bad_arguments"),
        ("settle", settle("b-1", {"icbc": -1, "boc": 2}), "bad_arguments"),
        ("transfer", issue("icbc", 1), "unknown_function"),
        ("supply", {}, "unknown_function"),  # read-only: POST /query
    ],
)
def test_bad_arguments_are_rejected_before_ordering(core, function, args, code):
    with pytest.raises(Rejection) as info:
        core.precheck(PBOC.tx("dcep", function, args))
    assert info.value.code == code


def test_params_are_required():
    for params in (None, {}, {"central_bank": ""}, {"central_bank": 5}, {"central_bank": CB, "x": 1}):
        with pytest.raises(ValueError, match="dcep contract params"):
            DcepContract(params)


# Unit level: each rule.


def test_only_the_central_bank_signs():
    ledger = dcep()
    ledger.run(CB, "issue", issue("icbc", 10))
    state = copy.deepcopy(ledger.state)
    for function, args in [
        ("issue", issue("icbc", 1)),
        ("withdraw", issue("icbc", 1)),
        ("settle", settle("b-1", {"icbc": -1, "boc": 1})),
    ]:
        with pytest.raises(ContractFailure, match=f"only the central bank {CB} may {function}"):
            ledger.run("icbc", function, args)
    assert ledger.state == state


def test_withdraw_to_zero_keeps_the_operator_and_below_zero_is_refused():
    ledger = dcep()
    ledger.run(CB, "issue", issue("icbc", 10))
    result, _ = ledger.run(CB, "withdraw", issue("icbc", 10))
    assert result == {"operator": "icbc", "allocation": 0}
    assert ledger.query("supply", {}) == {"issued": 10, "withdrawn": 10, "allocations": {"icbc": 0}}
    with pytest.raises(ContractFailure, match="insufficient allocation: icbc has 0, withdrawing 1"):
        ledger.run(CB, "withdraw", issue("icbc", 1))
    with pytest.raises(ContractFailure, match="insufficient allocation: boc has 0"):
        ledger.run(CB, "withdraw", issue("boc", 1))


def test_settle_below_zero_applies_nothing():
    ledger = dcep()
    ledger.run(CB, "issue", issue("icbc", 50))
    ledger.run(CB, "issue", issue("boc", 50))
    state = copy.deepcopy(ledger.state)
    # icbc could pay, boc could not: neither moves, and the batch is not recorded.
    with pytest.raises(ContractFailure, match="insufficient allocation: boc has 50"):
        ledger.run(CB, "settle", settle("b-1", {"icbc": -10, "boc": -60, "ccb": 70}))
    assert ledger.state == state
    ledger.run(CB, "settle", settle("b-1", {"icbc": -10, "boc": -40, "ccb": 50}))  # the id is still free
    assert ledger.query("supply", {})["allocations"] == {"boc": 10, "ccb": 50, "icbc": 40}


def test_a_batch_applies_once():
    ledger = dcep()
    ledger.run(CB, "issue", issue("icbc", 50))
    ledger.run(CB, "settle", settle("b-1", {"icbc": -10, "boc": 10}))
    state = copy.deepcopy(ledger.state)
    with pytest.raises(ContractFailure, match="batch 'b-1' already settled"):
        ledger.run(CB, "settle", settle("b-1", {"icbc": -10, "boc": 10}))
    with pytest.raises(ContractFailure, match="already settled"):
        ledger.run(CB, "settle", settle("b-1", {}, root="ab" * 32, count=0))  # whatever it carries
    assert ledger.state == state


def test_an_empty_batch_is_recorded():
    ledger = dcep()
    result, events = ledger.run(CB, "settle", settle("b-0", {}, count=4))
    assert result == {"batch_id": "b-0", "allocations": {}}
    assert events[0]["name"] == "settled"
    assert ledger.query("batch", {"batch_id": "b-0"})["transfer_count"] == 4
    assert ledger.query("supply", {}) == {"issued": 0, "withdrawn": 0, "allocations": {}}


def test_total_issued_stays_within_a_signed_64_bit_integer():
    ledger = dcep()
    ledger.run(CB, "issue", issue("icbc", MAX_INT))
    ledger.run(CB, "withdraw", issue("icbc", MAX_INT))
    # Withdrawn money does not make room: the cumulative total is what is bounded.
    with pytest.raises(ContractFailure, match="total issued would exceed the maximum"):
        ledger.run(CB, "issue", issue("boc", 1))


def test_queries_on_an_empty_ledger():
    ledger = dcep()
    assert ledger.query("allocation", {"operator": "icbc"}) == 0
    assert ledger.query("supply", {}) == {"issued": 0, "withdrawn": 0, "allocations": {}}
    assert ledger.query("batch", {"batch_id": "b-1"}) is None


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("allocation", {"operator": "ICBC"}),
        ("allocation", {}),
        ("supply", {"operator": "icbc"}),
        ("batch", {"batch_id": "has space"}),
        ("batch", {"batch_id": ""}),
    ],
)
def test_bad_query_arguments(function, args):
    with pytest.raises(BadArguments):
        DcepContract({"central_bank": CB}).validate_query(function, args)


BAD_ARGS = {
    # amounts: positive ints only (fen), never floats or bools
    "amount-float": ("issue", issue("icbc", 1.0)),
    "amount-bool": ("issue", issue("icbc", True)),
    "amount-zero": ("issue", issue("icbc", 0)),
    "amount-negative": ("withdraw", issue("icbc", -1)),
    "amount-string": ("issue", issue("icbc", "100")),
    "amount-too-big": ("issue", issue("icbc", MAX_INT + 1)),
    # operator slugs
    "slug-upper": ("issue", issue("ICBC", 1)),
    "slug-leading-dash": ("issue", issue("-icbc", 1)),
    "slug-colon": ("withdraw", issue("op:icbc", 1)),
    "slug-underscore": ("issue", issue("_totals", 1)),
    "slug-too-long": ("issue", issue("a" * 64, 1)),
    "slug-empty": ("issue", issue("", 1)),
    "slug-not-string": ("issue", issue(7, 1)),
    # refs
    "ref-empty": ("issue", issue("icbc", 1, "")),
    "ref-too-long": ("issue", issue("icbc", 1, "r" * 129)),
    "ref-control": ("withdraw", issue("icbc", 1, "a\nb")),
    "ref-not-string": ("issue", issue("icbc", 1, 12)),
    # exact arguments
    "missing-ref": ("issue", {"operator": "icbc", "amount": 1}),
    "extra-arg": ("withdraw", {**issue("icbc", 1), "memo": "x"}),
    "settle-missing-root": ("settle", {"batch_id": "b", "positions": {}, "transfer_count": 0}),
    # settle
    "sum-not-zero": ("settle", settle("b", {"icbc": -5, "boc": 4})),
    "sum-positive-alone": ("settle", settle("b", {"icbc": 1})),
    "position-float": ("settle", settle("b", {"icbc": -1.0, "boc": 1.0})),
    "position-bool": ("settle", settle("b", {"icbc": True, "boc": -1})),
    "position-string": ("settle", settle("b", {"icbc": "-1", "boc": "1"})),
    "position-too-big": ("settle", settle("b", {"icbc": -(MAX_INT + 1), "boc": MAX_INT + 1})),
    "position-bad-slug": ("settle", settle("b", {"ICBC": -1, "boc": 1})),
    "positions-a-list": ("settle", settle("b", [["icbc", 0]])),
    "positions-too-many": ("settle", settle("b", {f"op-{i}": 0 for i in range(1001)})),
    "root-upper": ("settle", settle("b", {}, root="0F" * 32)),
    "root-short": ("settle", settle("b", {}, root="0f" * 31)),
    "root-not-string": ("settle", settle("b", {}, root=None)),
    "count-negative": ("settle", settle("b", {}, count=-1)),
    "count-bool": ("settle", settle("b", {}, count=False)),
    "count-float": ("settle", settle("b", {}, count=3.0)),
    "batch-id-space": ("settle", settle("b 1", {})),
    "batch-id-slash": ("settle", settle("b/1", {})),
    "batch-id-too-long": ("settle", settle("b" * 129, {})),
    "batch-id-not-string": ("settle", settle(1, {})),
}


@pytest.mark.parametrize("case", list(BAD_ARGS), ids=list(BAD_ARGS))
def test_bad_arguments(case):
    function, args = BAD_ARGS[case]
    with pytest.raises(BadArguments):
        DcepContract({"central_bank": CB}).validate(function, args, CB)


def test_a_thousand_positions_are_allowed():
    positions = {f"op-{i}": 0 for i in range(999)} | {"icbc": 0}
    DcepContract({"central_bank": CB}).validate("settle", settle("b", positions), CB)


# The invariant, over random sequences.

OPERATORS = ["icbc", "boc", "ccb", "abc"]
amounts = st.one_of(st.integers(1, 1_000), st.integers(1, MAX_INT))


@st.composite
def positions(draw):
    """Net positions summing to zero (the last operator balances the others)."""
    slugs = draw(st.lists(st.sampled_from(OPERATORS), unique=True, max_size=len(OPERATORS)))
    if not slugs:
        return {}
    values = [draw(st.integers(-2_000, 2_000)) for _ in slugs[:-1]]
    return dict(zip(slugs, [*values, -sum(values)], strict=True))


steps = st.one_of(
    st.tuples(st.just("issue"), st.sampled_from(OPERATORS), amounts),
    st.tuples(st.just("withdraw"), st.sampled_from(OPERATORS), amounts),
    st.tuples(st.just("settle"), st.sampled_from(["b-1", "b-2", "b-3", "b-4"]), positions()),
)
signers = st.sampled_from([CB, CB, CB, "icbc"])


def _model_accepts(model: dict, issued: int, seen_batches: set, signer: str, step: tuple) -> bool:
    """What the contract should decide, from a plain model of the allocations."""
    if signer != CB:
        return False
    function, target, value = step
    if function == "issue":
        return issued + value <= MAX_INT
    if function == "withdraw":
        return model.get(target, 0) >= value
    return target not in seen_batches and all(model.get(slug, 0) + v >= 0 for slug, v in value.items())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(signers, steps), max_size=40))
def test_supply_is_conserved_and_no_allocation_goes_negative(sequence):
    ledger = dcep()
    model: dict[str, int] = {}
    issued = withdrawn = 0
    batches: set[str] = set()
    for signer, step in sequence:
        function, target, value = step
        args = settle(target, value) if function == "settle" else issue(target, value)
        before = copy.deepcopy(ledger.state)
        expected = _model_accepts(model, issued, batches, signer, step)
        try:
            ledger.run(signer, function, args)
        except ContractFailure:
            assert not expected, (signer, step)
            assert ledger.state == before  # a refused tx changes nothing
        else:
            assert expected, (signer, step)
            if function == "issue":
                model[target] = model.get(target, 0) + value
                issued += value
            elif function == "withdraw":
                model[target] -= value
                withdrawn += value
            else:
                batches.add(target)
                for slug, v in value.items():
                    if v:
                        model[slug] = model.get(slug, 0) + v

        supply = ledger.query("supply", {})
        allocations = supply["allocations"]
        assert sum(allocations.values()) == supply["issued"] - supply["withdrawn"]
        assert all(0 <= v <= MAX_INT for v in allocations.values())
        assert (supply["issued"], supply["withdrawn"]) == (issued, withdrawn)
        assert allocations == model
        assert all(ledger.query("allocation", {"operator": slug}) == allocations.get(slug, 0) for slug in OPERATORS)

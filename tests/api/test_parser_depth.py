"""The nesting bound of the API's JSON parser, on values as json.loads makes them."""

from __future__ import annotations

import json

import pytest

from apps.common.parsers import too_deep


def nested(levels: int, kind: str) -> object:
    value: object = 0
    for i in range(levels):
        value = [value] if kind == "list" or (kind == "mixed" and i % 2) else {"k": value, "n": i}
    return value


@pytest.mark.parametrize("kind", ["list", "dict", "mixed"])
def test_depth_is_counted_in_containers_whatever_their_kind(kind):
    for levels in (1, 63, 64):
        assert not too_deep(json.loads(json.dumps(nested(levels, kind))), 64), levels
    for levels in (65, 200):
        assert too_deep(json.loads(json.dumps(nested(levels, kind))), 64), levels
    assert too_deep(nested(5000, kind), 64)  # deeper than json.dumps goes: the walk has no recursion


def test_a_wide_shallow_body_is_not_deep_and_a_deep_branch_among_many_is():
    batch = {"payments": [{"from_wallet": "1", "to_wallet": "2", "amount": 1, "memo": ""} for _ in range(8190)]}
    assert not too_deep(batch, 64)
    batch["payments"][4000]["memo"] = nested(70, "list")
    assert too_deep(batch, 64)
    assert not too_deep("scalar", 1) and not too_deep([], 1) and too_deep([[]], 1)

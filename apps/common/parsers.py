"""The API's JSON parser: DRF's, with a bound on nesting (400 beyond it).

Deeply nested JSON costs recursion everywhere it goes: Python's parser gives up with a
RecursionError (not a ValueError) somewhere under 1,000 levels, and so do the renderer,
the canonical encoder and every node that later reads a block holding it. The API and
the gateway refuse bodies nested deeper than ``BSN_MAX_JSON_DEPTH`` (64) levels of arrays
and objects, before anything is stored or forwarded.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError


def too_deep(value: Any, limit: int) -> bool:
    """True if ``value`` has more than ``limit`` levels of nested lists/dicts (no recursion).

    ``value`` comes from ``json.loads``: containers are exactly ``dict`` and ``list``, so the
    walk compares types (a DCEP batch is 8,190 objects: this runs on every one of them).
    """
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is dict:
            children = item.values()
        elif kind is list:
            children = item
        else:
            continue
        if depth > limit:
            return True
        below = depth + 1
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                push((child, below))
    return False


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.BSN_MAX_JSON_DEPTH
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            # e.g. 100,000 nested "[": the json module gives up with RecursionError, not ValueError.
            raise ParseError(f"JSON parse error - nested deeper than {limit} levels") from None
        if too_deep(data, limit):
            raise ParseError(f"JSON parse error - nested deeper than {limit} levels")
        return data

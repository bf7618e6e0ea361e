"""Canonical JSON: the one serialisation that signers and verifiers agree on.

``canonical(obj)`` is ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` encoded as UTF-8 (see docs/ledger-protocol.md). Floats (and
NaN/Infinity) are refused everywhere, so every implementation writes numbers alike.
"""

from __future__ import annotations

import json
import re
from json.encoder import c_make_encoder
from json.encoder import encode_basestring as _encode_basestring
from typing import Any

MAX_DEPTH = 64  # JSON nesting levels a new transaction's envelope may have (docs/ledger-protocol.md)

_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# The C encoder behind _encoder, made once: JSONEncoder.encode builds a new one per call.
# No cycle markers (values come from parsed JSON, which cannot hold cycles), so it keeps
# no state between calls and threads may share it.
if c_make_encoder is not None:
    _c_encode = c_make_encoder(None, _encoder.default, _encode_basestring, None, ":", ",", True, False, False)
else:  # an interpreter without the C accelerator
    _c_encode = _encoder.iterencode


class CanonicalError(ValueError):
    """The value cannot be canonical JSON (a float, a non-string key, another type)."""


def canonical(obj: Any) -> bytes:
    """Canonical UTF-8 bytes of ``obj``; raises CanonicalError for floats and odd types."""
    check(obj)
    return dumps(obj)


def encode_string(text: str) -> bytes:
    """canonical(text) for a string: the encoder's own C routine for string values."""
    return _encode_basestring(text).encode("utf-8")


def dumps(obj: Any) -> bytes:
    """Canonical bytes of a value already known to be valid (no type walk)."""
    if type(obj) is str:
        return encode_string(obj)
    return "".join(_c_encode(obj, 0)).encode("utf-8")


def check(obj: Any) -> None:
    """Raise CanonicalError unless ``obj`` holds only null, bool, int, str, list and dict."""
    stack = [obj]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            continue
        if kind is list or kind is tuple:
            stack.extend(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if type(key) is not str:
                    raise CanonicalError(f"object keys must be strings, got {type(key).__name__}")
                stack.append(item)
        elif kind is float:
            raise CanonicalError("floats are not allowed; use integers or strings")
        else:
            raise CanonicalError(f"{kind.__name__} is not a JSON type")


def _no_float(text: str) -> Any:
    raise CanonicalError(f"floats are not allowed ({text}); use integers or strings")


def _no_constant(text: str) -> Any:
    raise CanonicalError(f"{text} is not valid JSON")


_decoder = json.JSONDecoder(parse_float=_no_float, parse_constant=_no_constant)


def loads(data: bytes | str) -> Any:
    """Parse JSON that may only contain canonical types; raises ValueError otherwise.

    Floats, NaN and Infinity are refused while parsing, so a parsed value needs no
    further type walk before :func:`dumps`.
    """
    if isinstance(data, bytes | bytearray):
        data = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    return _decoder.decode(data)


# Depth without parsing, in a few C-speed passes, so a body is checked before the parser
# (whose recursion an attacker would otherwise drive) sees it: drop escape pairs, keep
# only quotes and brackets, drop the strings (now only quotes and brackets), then strip
# innermost bracket pairs once per level. Written by hand because the standard
# library's parser takes no depth limit.
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_STRING = re.compile(rb'"[^"]*"')
_INNERMOST = re.compile(rb"\[\]|\{\}")


def depth_within(raw: bytes, limit: int) -> bool:
    """True when the JSON text ``raw`` nests arrays and objects at most ``limit`` levels.

    Unbalanced brackets count as too deep (such text is not valid JSON either).
    """
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)
    brackets = raw.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in brackets:
        brackets = _STRING.sub(b"", brackets)
    for _ in range(limit):
        if not brackets:
            return True
        brackets = _INNERMOST.sub(b"", brackets)
    return not brackets

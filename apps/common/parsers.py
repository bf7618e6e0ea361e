"""The API's JSON parser: DRF's, with input nested too deeply for Python's parser made a 400."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            # e.g. 100,000 nested "[": the json module gives up with RecursionError, not ValueError.
            raise ParseError("JSON parse error - nested too deeply") from None

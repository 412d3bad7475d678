"""JSON in, with what the database cannot store refused at the door (400, never a 500)."""

import io
import re

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from .exceptions import PayloadTooLarge

# A lone UTF-16 surrogate cannot be encoded as UTF-8 (the response would fail), and
# PostgreSQL refuses NUL in text and jsonb.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _check(value) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                raise ParseError(
                    "JSON strings may not contain NUL characters or unpaired surrogates."
                )
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if stream is not None and limit is not None:
            # A body sent without a length (chunked) is bounded here as well.
            body = stream.read(limit + 1)
            if len(body) > limit:
                raise PayloadTooLarge()
            stream = io.BytesIO(body)
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply.") from exc
        _check(data)
        return data

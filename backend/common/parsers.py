"""JSON in, with what the database cannot store refused at the door (400, never a 500)."""

import io
import json
import sys

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.utils.json import strict_constant

from .exceptions import PayloadTooLarge
from .storable import MAX_JSON_DEPTH, shallow, storable


def _check(value) -> None:
    if not shallow(value):
        raise ParseError(f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep.")
    if not storable(value):
        raise ParseError("JSON strings may not contain NUL characters or unpaired surrogates.")


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        if stream is not None:
            stream = io.BytesIO(_bounded(stream))
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply.") from exc
        except ParseError as exc:
            raise _said_plainly(exc) from exc
        _check(data)
        return data


def _said_plainly(exc: ParseError) -> ParseError:
    """Python's refusal of an integer over 4,300 digits told the client to call
    ``sys.set_int_max_str_digits()``."""
    if "set_int_max_str_digits" in str(exc.detail):
        return ParseError(
            f"JSON parse error - an integer has more than {sys.get_int_max_str_digits()} "
            "digits, more than any field here takes."
        )
    return exc


def _bounded(stream) -> bytes:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is None:
        return stream.read()
    # A body sent without a length (chunked) is bounded here as well.
    body = stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge()
    return body


class JSONTolerantFormParser(FormParser):
    """Forms; and a JSON object sent without its Content-Type (``curl -d '{...}'`` labels it
    a form) read as the JSON it is. A real form body never starts with ``{``: a browser
    encodes it as ``%7B``."""

    def parse(self, stream, media_type=None, parser_context=None):
        body = _bounded(stream) if stream is not None else b""
        if body.lstrip()[:1] == b"{":
            try:
                # NaN and Infinity refused, as by the JSON parser (STRICT_JSON).
                data = json.loads(body, parse_constant=strict_constant)
            except (ValueError, RecursionError) as exc:
                raise _said_plainly(
                    ParseError(
                        f"JSON parse error - {exc} (send JSON with Content-Type: application/json)."
                    )
                ) from exc
            _check(data)
            return data
        return super().parse(io.BytesIO(body), media_type, parser_context)

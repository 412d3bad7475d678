"""What every database the service runs on can store as text or JSON: no NUL character
(PostgreSQL refuses it in text and jsonb) and no unpaired UTF-16 surrogate (it cannot be
encoded as UTF-8, so neither stored nor sent). Input holding one is refused at the door
(``parsers``, the task input field); what a job produces from the outside world (a server's
answer, a file's header) is made storable instead (``made_storable``)."""

from __future__ import annotations

import math
import re
from typing import Any

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def _strings(value: Any):
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def storable(value: Any) -> bool:
    """Whether no string in ``value`` (keys included) holds NUL or a lone surrogate."""
    return not any(UNSTORABLE.search(text) for text in _strings(value))


def finite(value: Any) -> bool:
    """Whether every number in ``value`` is finite: JSON has no NaN nor infinity, and a
    number beyond a double (``1e400``, which Python reads as infinity) is stored nowhere."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return True


# Deeper JSON than this is refused at the door. The parser reads up to Python's recursion
# limit, but storing or rendering a value a little less deep than that fails further on
# (psycopg's and DRF's encoders recurse too, from a deeper stack): a 500, not a 400.
MAX_JSON_DEPTH = 100


def shallow(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests lists and objects at most ``limit`` deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def storable_text(text: str) -> str:
    """``text`` with each NUL and each unpaired surrogate replaced by U+FFFD (a well-formed
    surrogate pair becomes the character it encodes)."""
    if not UNSTORABLE.search(text):
        return text
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text.replace("\x00", REPLACEMENT)


def made_storable(value: Any) -> Any:
    """``value`` (JSON-like) with ``storable_text`` applied to every string, keys included;
    ``value`` itself when it is storable already."""
    if storable(value):
        return value
    return _replaced(value)


def _replaced(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {_replaced(key): _replaced(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_replaced(item) for item in value]
    return value

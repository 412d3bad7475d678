"""Display names and content types of files: cleaned, never trusted as paths."""

from __future__ import annotations

import mimetypes
import re
import unicodedata

MAX_NAME_LENGTH = 255
FALLBACK_NAME = "file"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CONTENT_TYPE_LENGTH = 100
_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
# A charset parameter kept with the type (a name as IANA's registry spells them, quoted or
# not): the bytes are served as they came, with what the client said they are.
_CHARSET = re.compile(r'\s*charset\s*=\s*("?)([a-z0-9][a-z0-9._:+-]{0,39})\1\s*')


def sanitize_name(raw: str | None, *, fallback: str = FALLBACK_NAME) -> str:
    """The last path component, without control or format characters (NUL, newlines,
    bidirectional overrides, lone surrogates), surrounding spaces and leading dots; at most
    255 characters, keeping a short extension. Empty after that: ``fallback``."""
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[/\\]", name)[-1]
    # Category C: control (Cc), format (Cf), surrogate (Cs), private use (Co), unassigned (Cn).
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))
    # Dots and spaces in any mix: stripped once each, " . .env" came out as ".env".
    name = re.sub(r"^[\s.]+", "", name).strip()
    if len(name) > MAX_NAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and 0 < len(extension) <= 16:
            name = stem[: MAX_NAME_LENGTH - len(extension) - 1].rstrip() + "." + extension
        else:
            name = name[:MAX_NAME_LENGTH].rstrip()
    return name or fallback


def clean_content_type(raw: str | None, name: str) -> str:
    """The client's content type when it is a plain ``type/subtype`` other than the generic
    ``application/octet-stream`` (what curl sends), with its ``charset`` if it gave one (as
    ``; charset=<name>``, its other parameters dropped), else a guess from the name, else
    ``application/octet-stream``."""
    value, *parameters = (raw or "").lower().split(";")
    value = value.strip()
    fits = len(value) <= MAX_CONTENT_TYPE_LENGTH  # the column's (File.content_type)
    if fits and _CONTENT_TYPE.fullmatch(value) and value != DEFAULT_CONTENT_TYPE:
        charsets = [found.group(2) for p in parameters if (found := _CHARSET.fullmatch(p))]
        with_charset = f"{value}; charset={charsets[0]}" if len(charsets) == 1 else value
        # The type kept without its charset when both do not fit.
        return with_charset if len(with_charset) <= MAX_CONTENT_TYPE_LENGTH else value
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE

"""``api_integration``: one HTTP call through the SSRF-safe client (``common.outbound``).

A literal address that would be refused is a 400 at create time; a name is resolved and
checked when the task runs. A 5xx answer, a timeout or a connection error is transient:
the runner tries again later with backoff, up to the type's ``max_attempts``.
"""

from __future__ import annotations

import base64
import re

from rest_framework import serializers

from backend.common import outbound
from backend.common.serializers import StrictJSONField, validate_outbound_url
from backend.common.storable import storable_text

from .base import (
    QUEUE_LONG,
    JobContext,
    StrictInputSerializer,
    StrictIntegerField,
    StrictStringField,
    TaskType,
    TransientError,
    register,
)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
MAX_TIMEOUT = 30
DEFAULT_TIMEOUT = 10
MAX_HEADERS = 50
MAX_HEADER_BYTES = 8 * 1024
# Headers that describe one connection (RFC 9110 §7.6.1) or that the client sets itself.
REFUSED_HEADERS = {
    "host",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 field-value: visible ASCII, with spaces and tabs inside but not at either end.
_FIELD_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?")


class UpstreamError(TransientError):
    """The server answered with a 5xx status."""


class URLField(StrictStringField):
    def __init__(self, **kwargs):
        super().__init__(max_bytes=2048, allow_blank=False, **kwargs)

    def to_internal_value(self, data):
        return validate_outbound_url(super().to_internal_value(data))

    def json_schema(self) -> dict:
        return {"type": "string", "format": "uri", "maxLength": 2048}


class HeadersField(serializers.Field):
    default_error_messages = {
        "invalid": "An object of header names to string values is required.",
        "too_many": f"At most {MAX_HEADERS} headers are allowed.",
        "name": "{name!r} is not a valid header name.",
        "refused": "The {name!r} header is set by the client and cannot be given.",
        "value": "The value of {name!r} must be a string of at most "
        f"{MAX_HEADER_BYTES} characters: printable ASCII, with spaces and tabs inside but "
        "not at either end (no line breaks nor other control characters; encode anything "
        "else, e.g. percent-encoded).",
    }

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("invalid")
        if len(data) > MAX_HEADERS:
            self.fail("too_many")
        for name, value in data.items():
            if not _TOKEN.fullmatch(name):  # match's ``$`` let a final line break through
                self.fail("name", name=name[:100])
            if name.lower() in REFUSED_HEADERS:
                self.fail("refused", name=name)
            # What HTTP/1.1 can carry (RFC 9110 field-value, ASCII as the client encodes it):
            # anything else failed at run time, a control character as a network error
            # retried four times.
            if (
                not isinstance(value, str)
                or len(value) > MAX_HEADER_BYTES
                or not _FIELD_VALUE.fullmatch(value)
            ):
                self.fail("value", name=name)
        return data

    def to_representation(self, value):
        return value

    def json_schema(self) -> dict:
        return {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "maxProperties": MAX_HEADERS,
        }


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "A JSON boolean is required."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class ApiIntegrationInput(StrictInputSerializer):
    url = URLField(help_text="http or https URL; private and loopback targets are refused.")
    method = serializers.ChoiceField(choices=METHODS, default="GET")
    headers = HeadersField(required=False)
    json = StrictJSONField(required=False, help_text="A JSON body to send.")
    timeout = StrictIntegerField(min_value=1, max_value=MAX_TIMEOUT, default=DEFAULT_TIMEOUT)
    follow_redirects = StrictBooleanField(default=False)


def _body(data: bytes, content_type: str, truncated: bool) -> tuple[str, bool]:
    """The body as text when it decodes (``False``), else base64 (``True``)."""
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type or "", re.IGNORECASE)
    charset = match.group(1) if match else "utf-8"
    # A cut may split the last character: up to three bytes are dropped to decode.
    for cut in range(4 if truncated else 1):
        try:
            text = data[: len(data) - cut].decode(charset)
        except (UnicodeDecodeError, LookupError):
            continue
        if storable_text(text) is text:  # no NUL, no lone surrogate (utf-7 can make one)
            return text, False
        break
    return base64.b64encode(data).decode("ascii"), True


def run(data: dict, ctx: JobContext) -> dict:
    response = outbound.request(
        data.get("method", "GET"),
        data["url"],
        headers=data.get("headers") or {},
        json=data.get("json"),
        timeout=data.get("timeout", DEFAULT_TIMEOUT),
        follow_redirects=data.get("follow_redirects", False),
    )
    if response.status_code >= 500:
        raise UpstreamError(f"the server answered {response.status_code}")
    body, is_base64 = _body(
        response.body, response.headers.get("content-type", ""), response.truncated
    )
    return {
        "status_code": response.status_code,
        "headers": response.headers,
        "body": body,
        "body_base64": is_base64,
        "truncated": response.truncated,
    }


register(
    TaskType(
        name="api_integration",
        description=(
            "Calls an http(s) URL (GET, POST, PUT, PATCH, DELETE, HEAD) with optional headers "
            "and JSON body; result: status_code, headers, body (text, or base64 with "
            "body_base64), truncated. Private, loopback and link-local targets are refused "
            "unless allow-listed; a 5xx, timeout or connection error is retried with backoff."
        ),
        input_serializer=ApiIntegrationInput,
        handler=run,
        time_limit=lambda data: int(data.get("timeout", DEFAULT_TIMEOUT)) + 15,
        max_attempts=4,
        queue=QUEUE_LONG,
        example={"url": "https://example.com/", "method": "GET", "timeout": 10},
        example_summary="GET https://example.com/",
        transient_errors=(UpstreamError, outbound.OutboundUnavailable),
        # A target refused (address, scheme, redirects): said in the task's error.
        expected_errors=(outbound.OutboundError,),
    )
)

"""Serializer behaviour shared by every app."""

import copy
import heapq
import json
import re

from rest_framework import serializers
from rest_framework.settings import api_settings

from . import outbound
from .storable import MAX_JSON_DEPTH, finite, shallow, storable

# Sent by the browsable API's HTML forms along with the fields.
FORM_KEYS = {"csrfmiddlewaretoken", "_content", "_content_type"}


# The keys a write does not take named one by one in its 400, at most: a body of 400,000
# unknown keys held a web worker 15 s to refuse it, in an answer of 58 MB.
NAMED_KEYS = 20


def unwritable_keys(
    keys,
    *,
    writable,
    known,
    cannot: str = "This field cannot be changed here.",
    unknown: str = "Unknown field.",
) -> dict[str, list[str]]:
    """The error of each key a write does not take: one the resource shows but the write
    cannot change (``known``), or an unknown one. The browsable API's form keys aside."""
    refused = set(keys) - set(writable) - FORM_KEYS
    return named_keys(refused, lambda key: cannot if key in known else unknown)


def named_keys(refused, message) -> dict[str, list[str]]:
    """``{key: [message(key)]}`` for the first ``NAMED_KEYS`` of ``refused`` in order, and
    how many more there are (under ``non_field_errors``) when there are more."""
    first = heapq.nsmallest(NAMED_KEYS, refused)
    errors = {key: [message(key)] for key in first}
    if len(refused) > NAMED_KEYS:
        more = len(refused) - NAMED_KEYS
        errors[api_settings.NON_FIELD_ERRORS_KEY] = [f"And {more} more fields not taken here."]
    return errors


class BoundedListField(serializers.ListField):
    """A list refused at once when it is longer than ``max_length``: DRF's checks every
    item first, and answers every bad one (a body of 2,600,000 empty strings for ``numbers``
    held a web worker two minutes and 5 GB, to answer 165 MB)."""

    def to_internal_value(self, data):
        if (
            self.max_length is not None
            and isinstance(data, list | tuple)
            and len(data) > self.max_length
        ):
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


# A user's name is shown to the other users (the users list): a control character, or a
# mark that turns the text's direction (a name could then read as another), is refused.
# Letters of a right-to-left script are text like any other.
_NOT_SHOWN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown_text(value: str) -> str:
    """``value``, when it holds no character ``_NOT_SHOWN`` refuses."""
    if value and _NOT_SHOWN.search(value):
        raise serializers.ValidationError(
            "Control characters and marks that change the text's direction are not allowed."
        )
    return value


class TextField(serializers.CharField):
    """A JSON string: DRF's CharField also takes a number (``0`` becomes ``"0"``), which
    the schema does not offer; a form's box is text anyway."""

    default_error_messages = {"invalid": "A string is required."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class RejectUnknownFieldsMixin:
    """A key the serializer does not take (unknown, or read-only for this caller) is a 400
    naming it, instead of being silently ignored."""

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            errors = unwritable_keys(data.keys(), writable=writable, known=self.fields)
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class CopiedFieldsMixin:
    """Each instance's fields copied from the class's declared ones without building them
    again: DRF deep-copies every declared field for every serializer instance, which calls
    each field's ``__init__`` anew, a good part of a create request's cost.

    A declared field is never bound (DRF binds the copies), so a shallow copy of it is a
    fresh, unbound field with the same settings; its containers a caller could change in
    place (validators, error messages, style) are copied with it. A list's or a dict's
    ``child`` is copied the same way, with it; a field that holds a serializer or a relation
    (a nested serializer, a many-related field) is deep-copied as DRF does."""

    def get_fields(self):
        return {name: copied_field(field) for name, field in self._declared_fields.items()}


_FIELD_CONTAINERS = ("_validators", "error_messages", "style")


def copied_field(field: serializers.Field) -> serializers.Field:
    """An unbound copy of an unbound field, as ``copy.deepcopy`` makes one."""
    child = field.__dict__.get("child")
    if (
        isinstance(field, serializers.BaseSerializer)
        or isinstance(child, serializers.BaseSerializer)
        or "child_relation" in field.__dict__
    ):
        return copy.deepcopy(field)
    # What copy.copy makes of a plain object (a new instance holding a copy of the
    # attributes), without its generic protocol, which costs more than the copy itself.
    fresh = object.__new__(type(field))
    attributes = fresh.__dict__
    attributes.update(field.__dict__)
    for name in _FIELD_CONTAINERS:
        if name in attributes:
            attributes[name] = copy.copy(attributes[name])
    if child is not None:
        # A list's or a dict's child is bound to the declared field (named "", as DRF
        # binds it): a copy of it belongs to the copy. Binding it again would fail (its
        # source is set), and would change nothing but its parent.
        attributes["child"] = copied_child = copied_field(child)
        copied_child.parent = fresh
    return fresh


def validate_outbound_url(value: str) -> str:
    """A URL the service will call (a webhook, an integration target): what the SSRF rules
    refuse without a lookup is a 400 with their reason. Empty passes (no URL)."""
    if value:
        try:
            outbound.validate_url(value)
        except outbound.OutboundRefused as exc:
            raise serializers.ValidationError(str(exc)) from None
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class StrictJSONField(serializers.JSONField):
    """Any JSON value the database stores: in a JSON body the value itself, in a form (the
    browsable API, form-encoded or multipart) its text. Either way no NaN, no infinity (nor
    a number beyond a double, ``1e400``), no NUL and no lone surrogate: each is a 400 naming
    the field, as the JSON parser refuses them in a body (``backend.common.parsers``)."""

    default_error_messages = {
        "invalid": "Value must be valid JSON.",
        "unstorable": "JSON strings may not contain NUL characters or unpaired surrogates.",
        "too_deep": f"JSON may nest at most {MAX_JSON_DEPTH} levels deep.",
        "not_finite": "Numbers must be finite, at most about ±1.8e308 (a number such as 1e400 "
        "is beyond what is stored).",
    }

    def get_value(self, dictionary):
        value = super().get_value(dictionary)
        if self.allow_null and value == "" and getattr(value, "is_json_string", False):
            return None  # a form's empty box, for a field that may be null (no result)
        return value

    def to_internal_value(self, data):
        if not getattr(data, "is_json_string", False):
            # A JSON body's value: the parser refused NUL and lone surrogates already, and
            # DRF's strict dump refuses infinity (1e400, as the parser reads it): say so,
            # rather than "not valid JSON" of a body that is. A value handed over by other
            # code (the admin's schedule form) is held to the same depth as a body.
            if not shallow(data):
                self.fail("too_deep")
            if not storable(data):
                self.fail("unstorable")
            try:
                return super().to_internal_value(data)
            except serializers.ValidationError:
                if not finite(data):
                    self.fail("not_finite")
                raise
        try:
            value = json.loads(data, parse_constant=_refuse_constant)
        except RecursionError:
            self.fail("too_deep")
        except ValueError:
            self.fail("invalid")
        if not shallow(value):
            self.fail("too_deep")
        if not finite(value):
            self.fail("not_finite")
        if not storable(value):
            self.fail("unstorable")
        return value

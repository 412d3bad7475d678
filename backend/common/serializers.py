"""Serializer behaviour shared by every app."""

from rest_framework import serializers

from . import outbound

# Sent by the browsable API's HTML forms along with the fields.
FORM_KEYS = {"csrfmiddlewaretoken", "_content", "_content_type"}


class RejectUnknownFieldsMixin:
    """A key the serializer does not take (unknown, or read-only for this caller) is a 400
    naming it, instead of being silently ignored."""

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            refused = sorted(set(data.keys()) - writable - FORM_KEYS)
            if refused:
                raise serializers.ValidationError(
                    {
                        key: [
                            "This field cannot be changed here."
                            if key in self.fields
                            else "Unknown field."
                        ]
                        for key in refused
                    }
                )
        return super().to_internal_value(data)


def validate_outbound_url(value: str) -> str:
    """A URL the service will call (a webhook, an integration target): what the SSRF rules
    refuse without a lookup is a 400 with their reason. Empty passes (no URL)."""
    if value:
        try:
            outbound.validate_url(value)
        except outbound.OutboundRefused as exc:
            raise serializers.ValidationError(str(exc)) from None
    return value

"""Serializer behaviour shared by every app."""

from rest_framework import serializers

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

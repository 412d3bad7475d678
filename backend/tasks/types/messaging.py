"""Mail: ``email`` (to any addresses) and ``reminder`` (to the task's owner).

Both send through Django's email backend (``EMAIL_URL``) with ``EMAIL_TIMEOUT`` on the
connection. A failure that may pass (the server down, silent, or refusing for now) has the
task tried again with backoff, up to ``MAIL_ATTEMPTS`` sends; any other fails the task at
once. Either way its error is a plain account of the failure (see ``common.email``).
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from rest_framework import serializers

from backend.common.email import (
    EmailDeliveryError,
    EmailUnavailable,
    address_refusal,
    send_budget,
    send_email,
)

from .base import (
    QUEUE_LONG,
    JobContext,
    StrictInputSerializer,
    StrictStringField,
    TaskType,
    register,
)

MAX_SUBJECT_CHARS = 200
MAX_BODY_BYTES = 100 * 1024
MAX_REMINDER_BYTES = 10 * 1024
# Sends of one mail while its server is down or refuses for now (TASK_RETRY_BACKOFF apart,
# doubling): 10 + 20 + 40 + 80 s of waiting at the default.
MAIL_ATTEMPTS = 5


def _time_limit(data: dict) -> int:
    # Longer than a send may take (send_email cuts it at send_budget() and the task is tried
    # again): at the time limit the task fails for good.
    return send_budget() + 10


class RecipientsField(serializers.Field):
    """One address or a list of them; kept as a list. The first bad address is named."""

    default_error_messages = {
        "invalid": "An email address or a list of email addresses is required.",
        "empty": "At least one recipient is required.",
        "too_many": "At most {maximum} recipients are allowed.",
        "bad_address": "{address!r} is not a valid email address.",
        "refused": "{address!r}: {refusal}",
    }

    def to_internal_value(self, data):
        addresses = [data] if isinstance(data, str) else data
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            self.fail("invalid")
        if not addresses:
            self.fail("empty")
        maximum = settings.EMAIL_TASK_MAX_RECIPIENTS
        if len(addresses) > maximum:
            self.fail("too_many", maximum=maximum)
        cleaned = []
        for address in addresses:
            address = address.strip()
            try:
                validate_email(address)
            except ValidationError:
                self.fail("bad_address", address=address[:254])
            if refusal := address_refusal(address):
                self.fail(
                    "refused", address=address[:254], refusal=refusal[0].lower() + refusal[1:]
                )
            if address.lower() not in {seen.lower() for seen in cleaned}:
                cleaned.append(address)
        return cleaned

    def to_representation(self, value):
        return value

    def json_schema(self) -> dict:
        address = {"type": "string", "format": "email"}
        return {
            "oneOf": [
                address,
                {
                    "type": "array",
                    "items": address,
                    "minItems": 1,
                    "maxItems": settings.EMAIL_TASK_MAX_RECIPIENTS,
                },
            ]
        }


class SubjectField(StrictStringField):
    default_error_messages = {
        "too_long": f"At most {MAX_SUBJECT_CHARS} characters are allowed.",
        "line_break": "A subject is one line: no line breaks.",
    }

    def __init__(self, **kwargs):
        super().__init__(max_bytes=MAX_SUBJECT_CHARS * 4, allow_blank=False, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not value.strip():  # spaces alone: a mail without a subject
            self.fail("blank")
        if len(value) > MAX_SUBJECT_CHARS:
            self.fail("too_long")
        # Every character Python's mail headers treat as a line break (\v, \f, \x1c-\x1e,
        # \x85, U+2028, U+2029 too): such a subject was accepted, then failed in the worker.
        if len(f"{value}x".splitlines()) > 1:
            self.fail("line_break")
        return value

    def json_schema(self) -> dict:
        return {"type": "string", "minLength": 1, "maxLength": MAX_SUBJECT_CHARS}


DEFAULT_SUBJECT = "A message from Async Task Manager"


class EmailInput(StrictInputSerializer):
    """Each part may be left out: the mail then goes to the owner's own address, with the
    task's name as its subject and its description as its text (so ``{"task_type": "email",
    "name": "Send Welcome Email"}`` mails you). What is filled in is stored in the task."""

    to = RecipientsField(
        required=False,
        help_text="an address, or a list of at most EMAIL_TASK_MAX_RECIPIENTS addresses; "
        "default: your own address",
    )
    subject = SubjectField(
        required=False,
        help_text=f"one line, at most {MAX_SUBJECT_CHARS} characters; default: the task's name",
    )
    body = StrictStringField(
        max_bytes=MAX_BODY_BYTES,
        required=False,
        help_text="plain text, at most 100 KB; default: the task's description",
    )
    html = StrictStringField(
        max_bytes=MAX_BODY_BYTES,
        required=False,
        help_text="optional HTML alternative of the body, at most 100 KB",
    )

    def to_internal_value(self, data):
        if isinstance(data, dict):
            data = {**self._defaults(), **data}
            if "body" not in data:  # the description, or else the subject
                description = (self.context.get("task") or {}).get("description") or ""
                subject = data.get("subject")
                data["body"] = description or (subject if isinstance(subject, str) else "")
        values = super().to_internal_value(data)
        if "to" not in values:
            raise serializers.ValidationError(
                {"to": ["Give an address: your account has no email address to default to."]}
            )
        return values

    def _defaults(self) -> dict:
        owner = self.context.get("owner")
        task = self.context.get("task") or {}
        name = (task.get("name") or "").strip()
        subject = name.splitlines()[0][:MAX_SUBJECT_CHARS] if name else DEFAULT_SUBJECT
        defaults = {"subject": subject}
        if getattr(owner, "email", ""):
            defaults["to"] = owner.email
        return defaults


def run_email(data: dict, ctx: JobContext) -> dict:
    sent = send_email(
        to=data["to"], subject=data["subject"], body=data["body"], html=data.get("html")
    )
    if not sent.refused:
        return {"sent": sent.count}
    # Not sent again: a retry would send the others a second copy.
    refused = [f"{address} (SMTP {code})" for address, code in sorted(sent.refused.items())]
    return {"sent": sent.count, "refused": refused}


class ReminderInput(StrictInputSerializer):
    message = StrictStringField(
        max_bytes=MAX_REMINDER_BYTES,
        allow_blank=False,
        help_text="what to remind you of, at most 10 KB; mailed to you (the task's owner)",
    )


def reminder_subject(message: str) -> str:
    first_line = message.strip().splitlines()[0] if message.strip() else ""
    if len(first_line) > 80:
        first_line = first_line[:79] + "…"
    return f"Reminder: {first_line}" if first_line else "Reminder"


def run_reminder(data: dict, ctx: JobContext) -> dict:
    from backend.users.models import User

    owner = User.objects.filter(pk=ctx.owner_id).only("email", "is_active").first()
    if owner is None or not owner.email:
        raise EmailDeliveryError(
            "the task's owner has no email address; add one on /api/users/me/ and retry"
        )
    if not owner.is_active:  # as its notifications: staff turned the account off
        raise EmailDeliveryError("not sent: the owner's account is deactivated")
    send_email(to=[owner.email], subject=reminder_subject(data["message"]), body=data["message"])
    return {"sent": 1}


register(
    TaskType(
        name="email",
        description="Sends an email (plain text, optionally with an HTML alternative) to one "
        "or more addresses through the configured mail server.",
        input_serializer=EmailInput,
        handler=run_email,
        time_limit=_time_limit,
        queue=QUEUE_LONG,
        # A mail server down, silent or refusing for now: tried again, with backoff.
        transient_errors=(EmailUnavailable,),
        # Any other failure to send (or no address to send to) is said in the task's error.
        expected_errors=(EmailDeliveryError,),
        max_attempts=MAIL_ATTEMPTS,
        example={
            "to": "you@example.com",
            "subject": "Hello from Async Task Manager",
            "body": "This mail was sent by a task.",
        },
        example_summary="Send a mail (put your own address in to, or leave to out if your "
        "account has one; `make run` prints mails in its output)",
    )
)

register(
    TaskType(
        name="reminder",
        description="Emails you (the task's owner) the given message.",
        input_serializer=ReminderInput,
        handler=run_reminder,
        time_limit=_time_limit,
        queue=QUEUE_LONG,
        # A mail server down, silent or refusing for now: tried again, with backoff.
        transient_errors=(EmailUnavailable,),
        # Any other failure to send (or no address to send to) is said in the task's error.
        expected_errors=(EmailDeliveryError,),
        max_attempts=MAIL_ATTEMPTS,
        example={"message": "Water the plants"},
        example_summary="Mail yourself a reminder (your account needs an email address: "
        "PATCH /api/users/me/)",
    )
)

"""Sending one notification: a short plain-text mail through Django's email backend, or a
JSON POST signed per Standard Webhooks through the SSRF-safe outbound client."""

from __future__ import annotations

import json
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.http import parse_http_date_safe
from rest_framework.utils.encoders import JSONEncoder

from backend.common import outbound
from backend.common.email import (
    EmailDeliveryError,
    RecipientsRefused,
    send_email,
    stable_message_id,
)
from backend.tasks.api.serializers import TaskSerializer
from backend.tasks.models import Task

from . import signing
from .models import Channel, Notification, TaskCallback
from .services import Outcome

VERBS = {
    "task.created": "was created",
    "task.completed": "completed",
    "task.failed": "failed",
    "task.cancelled": "was cancelled",
}
MAX_TEXT = 2000
MAX_SUBJECT = 200


def task_data(notification: Notification) -> dict:
    """The task as the API shows it now, or only its id once it has been deleted (what a
    notification's first attempt sends, and every later one again)."""
    task = Task.objects.select_related("owner", "assignee").filter(pk=notification.task_id).first()
    if task is None:
        return {"id": str(notification.task_id), "deleted": True}
    return json.loads(json.dumps(TaskSerializer(task).data, cls=JSONEncoder))


def withdrawn(notification: Notification) -> str:
    """Why this is no longer to be sent ("" when it is): since the event, the owner's
    webhook_url changed (perhaps because it leaked), or they stopped asking for this mail.
    Read at each attempt, so a retry stops too. A task's callback_url is the task's own.
    A deactivated account is sent nothing, its callbacks included: staff turned it off."""
    user = notification.user
    if not user.is_active:
        return "not sent: the owner's account is deactivated"
    if (
        notification.channel == Channel.WEBHOOK
        and user.webhook_url != notification.target
        # The task's callback_url was that same URL (one notification stands for both).
        and not TaskCallback.objects.filter(
            task_id=notification.task_id, url=notification.target
        ).exists()
    ):
        return "not sent: the owner's webhook_url changed after the event"
    if notification.channel == Channel.EMAIL and (
        (user.email or "").casefold() != notification.target.casefold()
        or notification.event not in (user.notify_email or [])
    ):
        return "not sent: the owner no longer asks for this mail (email or notify_email changed)"
    return ""


def send(notification: Notification) -> Outcome:
    reason = withdrawn(notification)
    if reason:
        return Outcome(delivered=False, final=True, error=reason)
    if notification.payload is None:
        # The first attempt: the task as it is now, kept for every retry of this message.
        notification.payload = json.dumps(task_data(notification), ensure_ascii=False)
        Notification.objects.filter(pk=notification.pk).update(payload=notification.payload)
    data = json.loads(notification.payload)
    if notification.channel == Channel.EMAIL:
        return _email(notification, data)
    return _webhook(notification, data)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"


def email_message(notification: Notification, data: dict) -> tuple[str, str]:
    name = data.get("name") or str(notification.task_id)
    # A subject is one header line: a name's line breaks (and other runs of whitespace)
    # become single spaces, or the mail could never be sent (Django refuses the header).
    # At most MAX_SUBJECT characters: a long name is shortened (…), never the event, which
    # a subject cut at its end lost ('Task "Quarterly report … xxxxx').
    shown, verb = " ".join(name.split()), VERBS[notification.event]
    room = MAX_SUBJECT - len(f'Task "" {verb}')
    if len(shown) > room:
        shown = shown[: room - 1].rstrip() + "…"
    subject = f'Task "{shown}" {verb}'
    lines = [
        f"Task:   {name}",
        f"Type:   {data.get('task_type', '-')}",
        f"Status: {data.get('status', 'deleted')}",
    ]
    if data.get("error"):
        lines.append(f"Error:  {_clip(str(data['error']))}")
    elif data.get("result") is not None:
        lines.append(f"Result: {_clip(json.dumps(data['result'], ensure_ascii=False))}")
    if not data.get("deleted"):
        lines.append(f"Link:   {settings.PUBLIC_BASE_URL}/api/tasks/{notification.task_id}/")
    lines += ["", f"You receive this because {notification.event} is in your notify_email."]
    return subject, "\n".join(lines) + "\n"


def _email(notification: Notification, data: dict) -> Outcome:
    subject, body = email_message(notification, data)
    try:
        send_email(
            to=[notification.target],
            subject=subject,
            body=body,
            # The same at every attempt, as a webhook's webhook-id is.
            message_id=stable_message_id(f"notification.{notification.pk}"),
        )
    except RecipientsRefused as exc:  # the address itself: sending again would be refused
        return Outcome(delivered=False, final=True, error=str(exc))
    except EmailDeliveryError as exc:
        return Outcome(delivered=False, error=str(exc))
    return Outcome(delivered=True)


def webhook_body(notification: Notification, data: dict) -> bytes:
    payload = {
        "type": notification.event,
        "timestamp": notification.created_at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _overlapping_secret(user) -> str:
    """The secret the last rotation replaced, while WEBHOOK_SECRET_OVERLAP lasts."""
    rotated = user.webhook_secret_rotated_at
    if not user.webhook_secret_previous or rotated is None:
        return ""
    if timezone.now() - rotated >= timedelta(seconds=settings.WEBHOOK_SECRET_OVERLAP):
        return ""
    return user.webhook_secret_previous


def _webhook(notification: Notification, data: dict) -> Outcome:
    secret = notification.user.webhook_secret
    if not secret:
        return Outcome(
            delivered=False,
            final=True,
            error="no webhook secret: create one with POST /api/users/me/webhook-secret/",
        )
    body = webhook_body(notification, data)
    headers = {
        "content-type": "application/json",
        "user-agent": "async-task-manager-webhooks/1",
        **signing.headers(
            secret=secret,
            msg_id=str(notification.pk),
            timestamp=int(time.time()),
            body=body,
            previous=_overlapping_secret(notification.user),
        ),
    }
    try:
        response = outbound.request(
            "POST",
            notification.target,
            headers=headers,
            content=body,
            timeout=settings.NOTIFY_WEBHOOK_TIMEOUT,
            max_body=0,  # the status is the answer: a body sent slowly does not hold it up
        )
    except outbound.OutboundRefused as exc:
        return Outcome(delivered=False, final=True, error=str(exc))
    except outbound.OutboundError as exc:
        return Outcome(delivered=False, error=str(exc))
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(delivered=True, status_code=code)
    if code == 410:
        return Outcome(
            delivered=False,
            final=True,
            status_code=code,
            error="the receiver answered 410 Gone",
            gone=True,
        )
    wait = retry_after(response.headers.get("retry-after")) if code in (429, 503) else None
    error = f"the receiver answered {code}"
    if wait:
        error += f", asking to be tried again in {wait:.0f} s (Retry-After)"
    return Outcome(delivered=False, status_code=code, error=error, retry_after=wait)


# The longest wait a receiver's Retry-After is honoured for.
MAX_RETRY_AFTER = 24 * 3600


def retry_after(value: str | None) -> float | None:
    """Seconds from now a ``Retry-After`` asks for (RFC 9110 §10.2.3: a number of seconds, or
    an HTTP date), at most MAX_RETRY_AFTER; None when there is none or it cannot be read.
    A receiver that asked for two hours was tried again within seconds, and its event was
    failed after NOTIFY_MAX_ATTEMPTS before the time it asked for."""
    value = (value or "").strip()
    if value.isascii() and value.isdigit():
        return float(min(int(value[:12]), MAX_RETRY_AFTER))
    when = parse_http_date_safe(value)
    if when is None:
        return None
    return min(max(when - time.time(), 0.0), MAX_RETRY_AFTER)

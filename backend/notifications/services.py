"""The outbox's every state change: planning and writing notifications in the caller's
transaction, sending them after commit, claiming one for delivery (guarded), recording each
attempt, re-sending what is due (the dispatcher), and resending by hand (admin)."""

from __future__ import annotations

import functools
import json
import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from backend.common import outbound, sql
from backend.common.email import send_budget
from backend.common.recording import RECORD_PAUSES, recorded
from backend.common.storable import storable_text
from backend.tasks import queue
from backend.tasks.types import QUEUE_LONG
from backend.users import services as user_services
from backend.users.models import User

from .models import Channel, DeliveryAttempt, Event, Notification, NotificationStatus, TaskCallback

logger = logging.getLogger(__name__)

DELIVER = "backend.notifications.jobs.deliver_notifications"
# Notifications per delivery message: a sweep that fails 100,000 tasks sends a few thousand
# messages, not 100,000 (each costs the sender and the worker more than a delivery's own
# statements), while a slow receiver holds up only the few others of its batch.
DELIVERY_BATCH = 20
# An SMTP server or a webhook receiver may hang: deliveries go to the queue of long jobs,
# at the priority of an urgent task, ahead of the other long tasks waiting there (a
# delivery is bounded by its timeout; it waited behind every user's countdowns, at the
# lowest priority).
DELIVERY_QUEUE = QUEUE_LONG
DELIVERY_RANK = 3


# --- who hears about a task ---------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """What a task's owner, and the task itself, ask to be told."""

    user_id: uuid.UUID
    email: str | None = None
    notify_email: list[str] = field(default_factory=list)
    webhook_url: str = ""
    callback_url: str = ""

    @classmethod
    def from_row(cls, user_id, email, notify_email, webhook_url, callback_url) -> Recipient:
        if isinstance(notify_email, str | bytes):  # raw SQL hands JSON back as text
            notify_email = json.loads(notify_email)
        return cls(
            user_id=uuid.UUID(str(user_id)),
            email=email or None,
            notify_email=list(notify_email or []),
            webhook_url=webhook_url or "",
            callback_url=callback_url or "",
        )


def recipient_columns(task_table: str) -> str:
    """What ``Recipient.from_row`` needs (the owner's id first), as columns of a statement
    on ``task_table`` (an ``UPDATE … RETURNING`` on SQLite, whose RETURNING may not name the
    tables of a FROM: each read in a subquery)."""
    users = User._meta.db_table
    callback = (
        f"(SELECT c.url FROM {TaskCallback._meta.db_table} c WHERE c.task_id = {task_table}.id)"
    )
    owner = f"{task_table}.owner_id"
    each = ", ".join(
        f"(SELECT u.{column} FROM {users} u WHERE u.id = {owner})"
        for column in ("email", "notify_email", "webhook_url")
    )
    return f"{owner}, {each}, {callback}"


def recipient_for(*, owner: User, callback_url: str = "") -> Recipient:
    return Recipient(
        user_id=owner.pk,
        email=owner.email,
        notify_email=list(owner.notify_email or []),
        webhook_url=owner.webhook_url,
        callback_url=callback_url,
    )


def recipient_of(*, task_id, owner_id) -> Recipient:
    """One query: the owner's preferences and the task's callback."""
    row = (
        User.objects.filter(pk=owner_id).values_list("email", "notify_email", "webhook_url").first()
    )
    callback = TaskCallback.objects.filter(task_id=task_id).values_list("url", flat=True)
    email, notify_email, webhook_url = row or (None, [], "")
    return Recipient(
        user_id=owner_id,
        email=email,
        notify_email=notify_email or [],
        webhook_url=webhook_url,
        callback_url=callback.first() or "",
    )


def plan(*, event: str, task_id, recipient: Recipient | None) -> list[Notification]:
    """The notifications one event of one task causes (unsaved): a mail when the owner chose
    this event and has an address, a webhook to their webhook_url, and one to the task's
    callback_url."""
    if recipient is None:
        return []
    planned = []
    if event in recipient.notify_email and recipient.email:
        planned.append((Channel.EMAIL, recipient.email))
    if recipient.webhook_url:
        planned.append((Channel.WEBHOOK, recipient.webhook_url))
    if recipient.callback_url and recipient.callback_url != recipient.webhook_url:
        planned.append((Channel.CALLBACK, recipient.callback_url))
    return [
        Notification(
            event=event, channel=channel, target=target, user_id=recipient.user_id, task_id=task_id
        )
        for channel, target in planned
    ]


# The same rules as ``plan``, for a set of tasks at once, in SQL: the sweeps write the
# notifications of thousands of tasks without reading a row into Python.

# A version-4 UUID as Django stores it on SQLite (32 hex digits), drawn by SQLite itself.
_SQLITE_UUID4 = (
    "lower(hex(randomblob(6)) || '4' || substr(hex(randomblob(2)), 2)"
    " || substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2)"
    " || hex(randomblob(6)))"
)


def _subscribed_sql(vendor: str) -> str:
    """True when the user row ``u`` has the event (one parameter) in ``notify_email``, a
    JSON list (``event in recipient.notify_email``)."""
    if vendor == "postgresql":
        return "u.notify_email @> jsonb_build_array(%s::text)"
    return (
        "json_type(u.notify_email) = 'array' AND EXISTS (SELECT 1 FROM "
        "json_each(u.notify_email) AS chosen WHERE chosen.type = 'text' AND chosen.value = %s)"
    )


def outbox_insert_sql(*, tasks: str, event: str) -> tuple[str, list, datetime | None]:
    """``INSERT … SELECT`` of the notifications that ``event`` causes for every task in
    ``tasks`` (a table expression in scope with columns ``id`` and ``owner_id``), by the rules
    of ``plan``: a mail when the owner chose the event and has an address, a webhook to their
    ``webhook_url``, one to the task's callback unless it is that same URL. Each row as
    ``notifications_create`` writes it. Returns the SQL, its parameters and the time the rows
    are marked as sent (None while the broker is skipped): the caller adds ``RETURNING id``
    and hands the ids to ``send_on_commit``."""
    here = sql.db()
    now = timezone.now()
    marked_at = now if queue.accepting() else None
    adapt = here.ops.adapt_datetimefield_value
    statement, slots = _outbox_insert(here.vendor, tasks)
    given = {
        "event": event,
        "pending": NotificationStatus.PENDING.value,
        "now": adapt(now),
        "marked": adapt(marked_at),
    }
    return statement, [given[slot] for slot in slots], marked_at


@functools.cache
def _outbox_insert(vendor: str, tasks: str) -> tuple[str, tuple[str, ...]]:
    """``outbox_insert_sql``'s statement, written once per database vendor and table
    expression, and the names of its parameters in order (filled in per call)."""
    ops = connection.ops
    users = ops.quote_name(User._meta.db_table)
    callbacks = ops.quote_name(TaskCallback._meta.db_table)
    table = ops.quote_name(Notification._meta.db_table)
    values: dict[str, tuple[str, tuple[str, ...]]] = {
        "id": ("gen_random_uuid()" if vendor == "postgresql" else _SQLITE_UUID4, ()),
        "event": ("%s", ("event",)),
        "channel": ("p.channel", ()),
        "target": ("p.target", ()),
        "user": ("p.owner_id", ()),
        "task_id": ("p.task_id", ()),
        "status": ("%s", ("pending",)),
        "attempts": ("0", ()),
        "next_attempt_at": ("%s", ("now",)),
        "enqueued_at": ("%s", ("marked",)),
        "locked_until": ("NULL", ()),
        "delivered_at": ("NULL", ()),
        "last_error": ("''", ()),
        "unreachable": ("FALSE", ()),
        "payload": ("NULL", ()),
        "created_at": ("%s", ("now",)),
    }
    fields = Notification._meta.concrete_fields
    if {f.name for f in fields} != set(values):  # a field added to the model and not here
        raise ImproperlyConfigured("outbox_insert_sql does not write every Notification field")
    columns = ", ".join(ops.quote_name(f.column) for f in fields)
    selected = ", ".join(values[f.name][0] for f in fields)
    slots = tuple(slot for f in fields for slot in values[f.name][1])
    # One SELECT per channel, each joining only what it needs: an owner who wants nothing
    # costs a hash probe per task, not a row per channel.
    statement = f"""INSERT INTO {table} ({columns})
        SELECT {selected} FROM (
            SELECT '{Channel.EMAIL}' AS channel, t.owner_id AS owner_id, t.id AS task_id,
                u.email AS target
            FROM {tasks} t JOIN {users} u ON u.id = t.owner_id
            WHERE u.email <> '' AND {_subscribed_sql(vendor)}
            UNION ALL
            SELECT '{Channel.WEBHOOK}', t.owner_id, t.id, u.webhook_url
            FROM {tasks} t JOIN {users} u ON u.id = t.owner_id
            WHERE u.webhook_url <> ''
            UNION ALL
            SELECT '{Channel.CALLBACK}', t.owner_id, t.id, cb.url
            FROM {tasks} t JOIN {callbacks} cb ON cb.task_id = t.id
                JOIN {users} u ON u.id = t.owner_id
            WHERE cb.url <> '' AND cb.url <> COALESCE(u.webhook_url, '')
        ) p"""
    return statement, (*slots, "event")  # the last: the event the mail subscription names


# --- writing and sending ------------------------------------------------------------------


def notifications_create(notifications: list[Notification]) -> None:
    """Insert the rows (one statement) in the caller's transaction; send them after commit.
    Marked as sent in the INSERT; the ones the broker does not take get NULL back and wait
    for the dispatcher."""
    if not notifications:
        return
    now = timezone.now()
    marked_at = now if queue.accepting() else None
    for notification in notifications:
        notification.next_attempt_at = now
        notification.enqueued_at = marked_at
    Notification.objects.bulk_create(notifications)
    send_on_commit([notification.pk for notification in notifications], marked_at)


def send_on_commit(ids: list, marked_at: datetime | None) -> None:
    """After the caller's transaction commits, send the rows written with ``enqueued_at =
    marked_at`` (None: the broker is skipped, the dispatcher sends them)."""
    if marked_at is not None and ids:
        transaction.on_commit(lambda: _send(ids, marked_at))


def send_delivery_messages(ids: list) -> int:
    """The delivery messages of these notifications, ``DELIVERY_BATCH`` ids to a message;
    returns how many of the ids went (in order: the rest are left to the dispatcher)."""
    batches = [
        [str(pk) for pk in ids[start : start + DELIVERY_BATCH]]
        for start in range(0, len(ids), DELIVERY_BATCH)
    ]
    sent = queue.send_messages(
        DELIVER, [[batch] for batch in batches], queue=DELIVERY_QUEUE, rank=DELIVERY_RANK
    )
    return sum(len(batch) for batch in batches[:sent])


def _pending():
    """Still pending: the guard of a statement over notifications picked by their ids
    (``sql.key_guard``: the key serves it, not the index of due ones)."""
    return sql.key_guard(Q(status=NotificationStatus.PENDING))


def _send(ids: list, marked_at: datetime | None) -> int:
    sent = send_delivery_messages(ids)
    if sent < len(ids) and marked_at is not None:
        try:
            Notification.objects.filter(
                _pending(), pk__in=ids[sent:], enqueued_at=marked_at
            ).update(enqueued_at=None)
        except Exception:  # resent after NOTIFY_REDISPATCH_AFTER anyway
            logger.warning("could not unmark %d unsent notification(s)", len(ids) - sent)
    return sent


def notify(*, event: str, task_id, recipient: Recipient | None) -> None:
    notifications_create(plan(event=event, task_id=task_id, recipient=recipient))


def task_callback_set(*, task_id, url: str) -> None:
    if url:
        TaskCallback.objects.create(task_id=task_id, url=url)


# --- delivery -----------------------------------------------------------------------------


def _lease() -> timedelta:
    """How long a claimed delivery is held: longer than any send can take (a slow mail
    server answering each of a send's steps just within EMAIL_TIMEOUT had its attempt taken
    over, and sent again, while it was still sending)."""
    longest = max(settings.NOTIFY_WEBHOOK_TIMEOUT, send_budget())
    return timedelta(seconds=longest + 5)


def _free(now: datetime) -> Q:
    return Q(locked_until__isnull=True) | Q(locked_until__lt=now)


def notification_claim(*, notification_id) -> Notification | None:
    """Take a due, pending notification for one delivery attempt (guarded: two workers
    never both send it); None when it is not due, taken, delivered or gone."""
    try:
        notification_id = uuid.UUID(str(notification_id))
    except ValueError:
        return None
    found = (
        Notification.objects.filter(pk=notification_id)
        .values_list("user_id", "channel", "target")
        .first()
    )
    if found is None:
        return None
    user_id, channel, target = found
    now = timezone.now()
    due = Q(status=NotificationStatus.PENDING, next_attempt_at__lte=now)
    if channel != Channel.EMAIL:
        if _resting(now, user_id, target, notification_id):
            return None
        if _user_busy(now, user_id, notification_id):
            # Unsent, without using an attempt: due at the dispatcher's next round (not at
            # once, where it would come first in every round while the user stays busy).
            Notification.objects.filter(
                sql.key_guard(due & Q(locked_until__isnull=True)), pk=notification_id
            ).update(
                # A second before the next round: a claim comes just after a round.
                next_attempt_at=now
                + timedelta(seconds=max(1, settings.NOTIFY_DISPATCH_INTERVAL - 1)),
                enqueued_at=None,
            )
            return None
    claimed = Notification.objects.filter(
        sql.key_guard(due & Q(locked_until__isnull=True)), pk=notification_id
    ).update(attempts=F("attempts") + 1, locked_until=now + _lease())
    if not claimed and not _take_over_lost_attempt(notification_id, due, now):
        return None
    return Notification.objects.select_related("user").get(pk=notification_id)


def _resting(now: datetime, user_id, target: str, notification_id) -> bool:
    """Whether another of the user's webhooks or callbacks to the same receiver as
    ``target`` (its scheme, host and port, however written: any path, query, credentials,
    case, default port or closing dot) got no answer at its last attempt, and its retry is
    not due yet. While one does, the receiver rests: its other deliveries are not tried
    (each would hold a worker process of the long queue for NOTIFY_WEBHOOK_TIMEOUT, and a
    user's hanging receiver would delay everyone's long tasks; callbacks to one dead server
    written each another way took a timeout each). They stay pending, and the dispatcher
    sends them again after NOTIFY_REDISPATCH_AFTER; the one whose retry comes due probes
    the receiver. (The user's resting ones are few: a partial index finds them.)"""
    receiver = _receiver(target)
    resting = (
        Notification.objects.filter(
            user_id=user_id,
            status=NotificationStatus.PENDING,
            unreachable=True,
            next_attempt_at__gt=now,
        )
        .exclude(channel=Channel.EMAIL)
        .exclude(pk=notification_id)
    )
    host = receiver[1] if len(receiver) > 1 else ""
    if host and "%" not in host and outbound.literal_address(host) is None:
        # A name: first those naming it at all (a user may have many resting). An address
        # may be written in forms that share no text (127.1, 2130706433): all are read.
        resting = resting.filter(target__icontains=host)
    return any(_receiver(other) == receiver for other in resting.values_list("target", flat=True))


def _held_webhooks(now: datetime) -> QuerySet:
    """The webhooks and callbacks held by an attempt whose lease has not run out (few rows:
    the held ones' partial index)."""
    return Notification.objects.filter(
        status=NotificationStatus.PENDING, locked_until__isnull=False, locked_until__gt=now
    ).exclude(channel=Channel.EMAIL)


def _user_busy(now: datetime, user_id, notification_id) -> bool:
    """Whether NOTIFY_USER_CONCURRENCY of the user's webhooks and callbacks are under way
    (held by an attempt whose lease has not run out). One user's receivers, each slow or
    hanging on a port or a name of its own (the rest above is per receiver), held every
    process of the long queue: everyone's notifications and long tasks waited minutes.
    Two attempts that check at the same moment may both go: a bound, not an exact count."""
    limit = settings.NOTIFY_USER_CONCURRENCY
    held = _held_webhooks(now).filter(user_id=user_id).exclude(pk=notification_id)
    return held[:limit].count() >= limit


def _busy_users(now: datetime) -> QuerySet:
    """The users with NOTIFY_USER_CONCURRENCY webhooks and callbacks under way."""
    return (
        _held_webhooks(now)
        .values("user_id")
        .annotate(held=Count("pk"))
        .filter(held__gte=settings.NOTIFY_USER_CONCURRENCY)
        .values("user_id")
    )


def _receiver(url: str) -> tuple:
    """Who answers ``url``: its scheme, host (lower case, no closing dot, an address in its
    one form) and port (the scheme's by default)."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return (url,)
    host = (parts.hostname or "").rstrip(".")
    address = outbound.literal_address(host)  # any form: 127.1, 2130706433, [::ffff:...]
    if address is not None:
        address = getattr(address, "ipv4_mapped", None) or address  # connected to as IPv4
    return (parts.scheme.lower(), str(address) if address else host, port)


def _milliseconds(start: datetime, end: datetime) -> int:
    return max(0, int((end - start).total_seconds() * 1000))


LOST_ATTEMPT = "no outcome: the worker making this attempt was lost (the receiver may have got it)"


def _take_over_lost_attempt(notification_id, due: Q, now: datetime) -> bool:
    """Claim a notification held by an attempt whose lease ran out (its worker died or was
    killed mid-send), and record that attempt, which nobody else will: each attempt's
    outcome is stored (SPEC §7), a lost one as lost."""
    held = (
        Notification.objects.filter(due, pk=notification_id, locked_until__lt=now)
        .values_list("locked_until", "attempts")
        .first()
    )
    if held is None:
        return False
    lease_end, lost = held
    taken = Notification.objects.filter(
        sql.key_guard(due & Q(locked_until=lease_end, attempts=lost)), pk=notification_id
    ).update(attempts=F("attempts") + 1, locked_until=now + _lease())
    if taken and lost:
        # Unless that attempt's worker, only slow, recorded its outcome meanwhile (or does
        # later: its outcome replaces this row).
        started_at = lease_end - _lease()
        DeliveryAttempt.objects.get_or_create(
            notification_id=notification_id,
            number=lost,
            defaults={
                "started_at": started_at,
                "duration_ms": _milliseconds(started_at, now),
                "delivered": False,
                "error": LOST_ATTEMPT,
            },
        )
    return bool(taken)


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    error: str = ""
    status_code: int | None = None
    # Never worth trying again (a refused address, no secret, 410 Gone).
    final: bool = False
    # The receiver answered 410 Gone: stop sending there (the owner's webhook_url, or the
    # task's callback_url, whichever was that URL).
    gone: bool = False
    # Seconds the receiver asked to be left alone (a 429's or a 503's Retry-After): the
    # next attempt waits at least that long.
    retry_after: float | None = None


def retry_delay(attempt: int) -> float:
    """Doubling from NOTIFY_BACKOFF up to NOTIFY_MAX_DELAY, drawn between half and all of it
    (jitter, so a receiver that comes back is not hit by every retry at once)."""
    ceiling = min(settings.NOTIFY_MAX_DELAY, settings.NOTIFY_BACKOFF * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


@transaction.atomic
def notification_record(*, notification: Notification, started_at: datetime, outcome: Outcome):
    """Store the attempt and move the notification on: delivered, failed (final, or out of
    attempts), or pending again after a backoff. Guarded by the attempt number."""
    now = timezone.now()
    error = storable_text(outcome.error)[:2000]  # a server's words may hold NUL
    # Replaces the "lost" row of an attempt that outlived its lease and was taken over.
    DeliveryAttempt.objects.update_or_create(
        notification=notification,
        number=notification.attempts,
        defaults={
            "started_at": started_at,
            "duration_ms": _milliseconds(started_at, now),
            "delivered": outcome.delivered,
            "status_code": outcome.status_code,
            "error": error,
        },
    )
    mine = Notification.objects.filter(
        sql.key_guard(Q(status=NotificationStatus.PENDING, attempts=notification.attempts)),
        pk=notification.pk,
    )
    if outcome.delivered:
        # Delivered is delivered, though a later attempt took over meanwhile (this one
        # outlived its lease): nothing sends it again.
        mine = Notification.objects.filter(
            sql.key_guard(Q(status=NotificationStatus.PENDING)), pk=notification.pk
        )
        status = NotificationStatus.DELIVERED
        mine.update(
            status=status, delivered_at=now, locked_until=None, last_error="", unreachable=False
        )
    elif outcome.final or notification.attempts >= settings.NOTIFY_MAX_ATTEMPTS:
        status = NotificationStatus.FAILED
        mine.update(status=status, locked_until=None, last_error=error, unreachable=False)
    else:
        status = NotificationStatus.PENDING
        mine.update(
            next_attempt_at=now
            + timedelta(seconds=max(retry_delay(notification.attempts), outcome.retry_after or 0)),
            enqueued_at=None,
            locked_until=None,
            last_error=error,
            unreachable=outcome.status_code is None and notification.channel != Channel.EMAIL,
        )
    if outcome.gone:
        if notification.channel == Channel.WEBHOOK:
            user_services.user_webhook_disable(
                user_id=notification.user_id, url=notification.target
            )
        # A webhook notification stands for the task's callback_url too when they are one URL.
        TaskCallback.objects.filter(task_id=notification.task_id, url=notification.target).delete()
    return status


def notifications_deliver(*, notification_ids: list) -> dict[str, int]:
    """One delivery attempt for each (the worker's job for a delivery message), one after
    the other; returns how many ended each way, for its log."""
    ended: dict[str, int] = {}
    for notification_id in notification_ids:
        outcome = notification_deliver(notification_id=notification_id)
        outcome = "skipped" if outcome.startswith("skipped") else outcome
        ended[outcome] = ended.get(outcome, 0) + 1
    return ended


def notification_deliver(*, notification_id) -> str:
    """One delivery attempt; returns what happened, for its log."""
    from . import delivery

    notification = notification_claim(notification_id=notification_id)
    if notification is None:
        return "skipped: not due, taken, delivered or gone"
    started_at = timezone.now()
    try:
        outcome = delivery.send(notification)
    except Exception as exc:  # a bug in a sender must not leave the row held
        logger.exception("delivering notification %s failed", notification.pk)
        outcome = Outcome(delivered=False, error=f"{type(exc).__name__}: {exc}")
    # Written again while the database restarts: lost, the attempt was taken for a lost
    # worker's when its lease ended and a delivered notification was sent again.
    return recorded(
        lambda: notification_record(
            notification=notification, started_at=started_at, outcome=outcome
        ),
        pauses_within(notification.locked_until),
    )


def pauses_within(lease_end: datetime) -> tuple[float, ...]:
    """The pauses of RECORD_PAUSES that end before the lease does (a second kept): the
    tries stop while the delivery is still held, so none outlasts it to be taken over."""
    left = (lease_end - timezone.now()).total_seconds() - 1
    pauses: list[float] = []
    for pause in RECORD_PAUSES:
        if sum(pauses) + pause > left:
            break
        pauses.append(pause)
    return tuple(pauses)


# --- the dispatcher and the admin -----------------------------------------------------------


def notifications_dispatch(*, batch_size: int = 500) -> dict[str, int]:
    """Send the due, undelivered notifications that are not held and were not sent lately
    (never sent, failed an attempt, or lost with a crashed worker or broker)."""
    now = timezone.now()
    resend_before = now - timedelta(seconds=settings.NOTIFY_REDISPATCH_AFTER)
    due = list(
        Notification.objects.filter(
            _free(now), status=NotificationStatus.PENDING, next_attempt_at__lte=now
        )
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=resend_before))
        # Not the webhooks of a user at NOTIFY_USER_CONCURRENCY: each would only wait again,
        # and a backlog of them (a sweep failing 100,000 of one user's tasks) came first in
        # every round, ahead of everyone else's retries.
        .exclude(~Q(channel=Channel.EMAIL), user_id__in=_busy_users(now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:batch_size]
    )
    sent = send_delivery_messages(due)
    if sent:
        Notification.objects.filter(_pending(), pk__in=due[:sent]).update(enqueued_at=now)
    return {"due": len(due), "sent": sent}


@transaction.atomic
def notifications_resend(*, queryset: QuerySet[Notification]) -> int:
    """Send again now (admin): each becomes pending and due, with one more attempt allowed
    if it had used them all. Its hold is left as it is: one being sent right now stays its
    sender's (freed, a second worker sent it at the same time), and one whose sender was
    lost is taken over as any other, its lost attempt recorded."""
    now = timezone.now()
    ids = list(queryset.values_list("pk", flat=True))
    marked_at = now if queue.accepting() else None
    count = Notification.objects.filter(pk__in=ids).update(
        status=NotificationStatus.PENDING,
        next_attempt_at=now,
        enqueued_at=marked_at,
        delivered_at=None,  # pending again: its next delivery sets it anew
    )
    if marked_at is not None and ids:
        transaction.on_commit(lambda: _send(ids, marked_at))
    return count


EVENTS = [choice.value for choice in Event]

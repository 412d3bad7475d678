"""The notifications of the sweeps (expiry, and rescue out of attempts), written by the
database for the whole set of tasks a sweep changes: the same rows, by the same rules, as
``services.plan`` writes for one task, on SQLite and on PostgreSQL."""

import itertools
import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backend.common.tests.conftest import _loopback_only  # noqa: F401
from backend.common.tests.httpserver import Answer, HTTPServer
from backend.notifications import jobs, services
from backend.notifications.models import Notification, TaskCallback
from backend.ops.tests.test_counts import assert_agree
from backend.tasks import queue
from backend.tasks import services as task_services
from backend.tasks.models import Task, TaskStatus
from backend.tasks.services import sweeps
from backend.tasks.tests.factories import TaskFactory
from backend.users import services as user_services
from backend.users.models import User
from backend.users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PAST = timedelta(seconds=1)
ROW_FIELDS = ("task_id", "user_id", "event", "channel", "target")


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run a sweep as its own transaction would: what it leaves for after commit runs."""

    def run(sweep, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return sweep(**kwargs)

    return run


def written() -> list[tuple]:
    return sorted(Notification.objects.values_list(*ROW_FIELDS))


def planned(tasks, event="task.failed") -> list[tuple]:
    """What ``plan`` (the rules of one task's change) writes for each of these tasks."""
    rows = []
    for task in tasks:
        recipient = services.recipient_of(task_id=task.pk, owner_id=task.owner_id)
        for n in services.plan(event=event, task_id=task.pk, recipient=recipient):
            rows.append((n.task_id, n.user_id, n.event, n.channel, n.target))
    return sorted(rows)


def owners_of_every_kind() -> list[User]:
    """One owner per combination of the preferences the rules look at."""
    choices = itertools.product(
        (["task.failed"], [], ["task.completed"], ["task.cancelled", "task.failed"], ["x"]),
        (True, False),  # an address or none
        ("", "https://hooks.example.com/in"),
    )
    owners = []
    for n, (events, address, webhook) in enumerate(choices):
        owner = UserFactory(notify_email=events, webhook_url=webhook and f"{webhook}/{n}")
        if not address:
            User.objects.filter(pk=owner.pk).update(email=None)
        owners.append(owner)
    # An empty address written around the model (which stores none as NULL): no mail either.
    owners.append(UserFactory(notify_email=["task.failed"]))
    User.objects.filter(pk=owners[-1].pk).update(email="")
    return owners


def overdue_tasks_of(owner: User) -> list[Task]:
    """Three overdue tasks: no callback, its own callback, a callback to the owner's
    webhook_url (told once)."""
    past = timezone.now() - PAST
    statuses = (TaskStatus.SCHEDULED, TaskStatus.PENDING, TaskStatus.RUNNING)
    tasks = [TaskFactory(owner=owner, status=status, deadline=past) for status in statuses]
    TaskCallback.objects.create(task=tasks[1], url=f"https://cb.example.com/{tasks[1].pk}")
    if owner.webhook_url:
        TaskCallback.objects.create(task=tasks[2], url=owner.webhook_url)
    return tasks


def test_expiry_writes_what_plan_writes_for_every_kind_of_owner(sent):
    overdue = [task for owner in owners_of_every_kind() for task in overdue_tasks_of(owner)]
    TaskFactory(status=TaskStatus.COMPLETED, deadline=timezone.now() - PAST)
    TaskFactory(deadline=timezone.now() + timedelta(hours=1))
    expected = planned(overdue)
    channels = {row[3] for row in expected}
    assert channels == {"email", "webhook", "callback"} and len(expected) > len(overdue) // 2

    assert task_services.tasks_expire() == len(overdue)
    assert written() == expected
    # Only the owners who chose task.failed and have an address are mailed.
    mailed = set(Notification.objects.filter(channel="email").values_list("user_id", flat=True))
    assert mailed == {
        owner.pk
        for owner in User.objects.filter(owned_tasks__in=overdue).distinct()
        if "task.failed" in owner.notify_email and owner.email
    }


def test_an_owner_who_wants_nothing_gets_nothing(user, sent):
    user.notify_email = ["task.completed", "task.cancelled"]
    user.save()
    TaskFactory(owner=user, deadline=timezone.now() - PAST)
    assert task_services.tasks_expire() == 1
    assert not Notification.objects.exists() and sent == []


def test_each_row_is_written_as_the_outbox_writes_one(user, other_user, sent, committed):
    other_user.notify_email = []
    other_user.webhook_url = "https://hooks.example.com/other"
    other_user.save()
    mine = TaskFactory(owner=user, status=TaskStatus.RUNNING, deadline=timezone.now() - PAST)
    theirs = TaskFactory(owner=other_user, deadline=timezone.now() - PAST)
    before = timezone.now()
    assert committed(task_services.tasks_expire) == 2
    after = timezone.now()
    rows = {n.task_id: n for n in Notification.objects.all()}
    assert set(rows) == {mine.pk, theirs.pk}
    assert (rows[mine.pk].channel, rows[mine.pk].target) == ("email", user.email)
    assert (rows[theirs.pk].channel, rows[theirs.pk].target) == (
        "webhook",
        "https://hooks.example.com/other",
    )
    for task, owner in ((mine, user), (theirs, other_user)):
        n = rows[task.pk]
        assert isinstance(n.pk, uuid.UUID) and n.pk.version == 4
        assert n.user_id == owner.pk and n.event == "task.failed"
        assert n.status == "pending" and n.attempts == 0 and n.last_error == ""
        assert n.locked_until is None and n.delivered_at is None
        assert before <= n.next_attempt_at <= after and n.created_at == n.next_attempt_at
        assert n.enqueued_at == n.next_attempt_at  # marked as sent in the INSERT
    # Sent once, after commit, one message per row.
    assert sorted(sent) == sorted(str(n.pk) for n in rows.values())


def test_nothing_is_sent_before_commit_nor_after_a_rollback(
    user, sent, django_capture_on_commit_callbacks
):
    task = TaskFactory(owner=user, deadline=timezone.now() - PAST)
    with django_capture_on_commit_callbacks() as callbacks:
        assert task_services.tasks_expire() == 1
    assert sent == [] and len(callbacks) == 1
    callbacks[0]()
    assert sent == [str(Notification.objects.get(task_id=task.pk).pk)]

    Notification.objects.all().delete()
    sent.clear()
    again = TaskFactory(owner=user, deadline=timezone.now() - PAST)
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        assert task_services.tasks_expire() == 1
        assert Notification.objects.filter(task_id=again.pk).exists()
        raise RuntimeError("the caller's transaction fails after the sweep")
    assert callbacks == [] and sent == []
    again.refresh_from_db()
    assert again.status == TaskStatus.PENDING and not Notification.objects.exists()


def test_with_the_broker_skipped_the_rows_wait_for_the_dispatcher(user, sent):
    TaskFactory(owner=user, deadline=timezone.now() - PAST)
    queue.breaker.trip()
    assert task_services.tasks_expire() == 1
    notification = Notification.objects.get()
    assert notification.enqueued_at is None and sent == []
    queue.breaker.reset()
    assert services.notifications_dispatch() == {"due": 1, "sent": 1}
    assert sent == [str(notification.pk)]


def test_a_second_sweep_changes_and_writes_nothing(user, sent, committed):
    tasks = [TaskFactory(owner=user, deadline=timezone.now() - PAST) for _ in range(3)]
    assert committed(task_services.tasks_expire) == 3
    first = written()
    assert len(first) == 3 and len(sent) == 3
    assert committed(task_services.tasks_expire) == 0
    assert written() == first and len(sent) == 3
    assert {t.status for t in Task.objects.filter(pk__in=[t.pk for t in tasks])} == {"failed"}


def test_ids_are_unique_across_a_large_sweep(user, sent, committed):
    user.webhook_url = "https://hooks.example.com/in"
    user.save()
    past = timezone.now() - PAST
    Task.objects.bulk_create(
        Task(owner=user, assignee=user, task_type="sum", input_data={}, deadline=past)
        for _ in range(500)
    )
    assert committed(task_services.tasks_expire) == 500
    ids = list(Notification.objects.values_list("pk", flat=True))
    assert len(ids) == 1000 and len(set(ids)) == 1000
    assert sorted(sent) == sorted(str(pk) for pk in ids)


def spread_overdue(owners, statuses) -> list[Task]:
    """Eight overdue tasks whose ids are spread over the whole range (every part of a split
    expiry has some), the first four below its middle."""
    past = timezone.now() - PAST
    return [
        TaskFactory(
            id=uuid.UUID(int=n << 124), owner=next(owners), status=next(statuses), deadline=past
        )
        for n in range(1, 16, 2)
    ]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite: one writer at a time")
@pytest.mark.django_db(transaction=True)
def test_a_large_expiry_runs_in_parts_at_once(user, other_user, sent, monkeypatch):
    """From PARALLEL_EXPIRY_FROM overdue tasks on, one statement per range of ids, each on a
    connection of its own and committed on its own: together they change, write, count and
    send what the single statement does."""
    monkeypatch.setattr(sweeps, "PARALLEL_EXPIRY_FROM", 6)
    other_user.notify_email = []
    other_user.webhook_url = "https://hooks.example.com/other"
    other_user.save()
    past = timezone.now() - PAST
    statuses = itertools.cycle((TaskStatus.SCHEDULED, TaskStatus.PENDING, TaskStatus.RUNNING))
    owners = itertools.cycle((user, other_user))
    overdue = spread_overdue(owners, statuses)
    later = TaskFactory(owner=user, deadline=timezone.now() + timedelta(hours=1))
    done = TaskFactory(owner=user, status=TaskStatus.COMPLETED, deadline=past)
    expected = planned(overdue)
    parts = []
    update_notifying = sweeps._update_notifying

    def recorded(tasks, *args, **kwargs):
        changed = update_notifying(tasks, *args, **kwargs)
        parts.append((threading.get_ident(), changed))
        return changed

    monkeypatch.setattr(sweeps, "_update_notifying", recorded)

    assert task_services.tasks_expire() == len(overdue)
    assert len(parts) == sweeps.EXPIRY_PARTS == len({thread for thread, _ in parts})
    assert all(changed > 0 for _, changed in parts)
    assert {t.status for t in Task.objects.filter(pk__in=[t.pk for t in overdue])} == {"failed"}
    assert set(Task.objects.filter(pk__in=[t.pk for t in overdue]).values_list("error")) == {
        (sweeps.DEADLINE_EXCEEDED,)
    }
    later.refresh_from_db()
    done.refresh_from_db()
    assert (later.status, done.status) == (TaskStatus.PENDING, TaskStatus.COMPLETED)
    assert written() == expected and len(expected) == len(overdue)
    assert sorted(sent) == sorted(
        str(pk) for pk in Notification.objects.values_list("pk", flat=True)
    )
    assert_agree()

    parts.clear()  # a second sweep finds too few to split, and changes nothing
    assert task_services.tasks_expire() == 0 and len(parts) == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite: one writer at a time")
@pytest.mark.django_db(transaction=True)
def test_a_part_that_fails_leaves_the_other_committed(user, sent, monkeypatch):
    monkeypatch.setattr(sweeps, "PARALLEL_EXPIRY_FROM", 6)
    overdue = spread_overdue(itertools.repeat(user), itertools.repeat(TaskStatus.PENDING))
    caller, update_notifying = threading.get_ident(), sweeps._update_notifying

    def lost_elsewhere(tasks, *args, **kwargs):
        if threading.get_ident() != caller:
            raise OperationalError("the connection was lost")
        return update_notifying(tasks, *args, **kwargs)

    monkeypatch.setattr(sweeps, "_update_notifying", lost_elsewhere)
    with pytest.raises(OperationalError):
        task_services.tasks_expire()
    statuses = dict(Task.objects.values_list("pk", "status"))
    assert [statuses[t.pk] for t in overdue] == ["failed"] * 4 + ["pending"] * 4
    assert sorted(sent) == sorted(
        str(pk) for pk in Notification.objects.values_list("pk", flat=True)
    )
    assert len(sent) == 4
    assert_agree()

    monkeypatch.setattr(sweeps, "_update_notifying", update_notifying)  # the next sweep
    assert task_services.tasks_expire() == 4
    assert set(Task.objects.values_list("status", flat=True)) == {"failed"}
    assert len(sent) == 8


def test_an_empty_selection_changes_nothing(user, sent):
    TaskFactory(owner=user, deadline=timezone.now() - PAST)
    assert task_services.tasks_expire(queryset=Task.objects.none()) == 0
    assert task_services.tasks_expire(queryset=Task.objects.filter(pk__in=[])) == 0
    assert Task.objects.get().status == TaskStatus.PENDING and not Notification.objects.exists()


def test_the_sweep_is_one_statement_on_postgresql_two_on_sqlite(user, sent):
    user.notify_email = []
    user.save()
    TaskFactory(owner=user, deadline=timezone.now() - PAST)
    with CaptureQueriesContext(connection) as captured:
        assert task_services.tasks_expire() == 1
    statements = [
        q["sql"]
        for q in captured.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT"))
    ]
    if connection.vendor == "postgresql":
        # The statement, between the setting that has it counted by itself (ops/counts.py).
        counting, statement, done = statements
        assert all("set_config('ops.counted_by_caller'" in sql for sql in (counting, done))
        assert statement.startswith("WITH was_scheduled AS (UPDATE")
        assert 'INSERT INTO "ops_taskcountdelta"' in statement
        assert 'INSERT INTO "notifications_notification"' in statement
    else:
        insert, update = statements
        assert 'INSERT INTO "notifications_notification"' in insert and "RETURNING" in insert
        assert update.startswith('UPDATE "tasks_task"')


def test_rescue_out_of_attempts_writes_what_plan_writes(sent, settings):
    # Shorter than the database server has been up (the rescue waits that long after it starts).
    settings.TASK_HEARTBEAT_TIMEOUT = 1
    stale = timezone.now() - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT + 5)
    spent, requeued = [], []
    for owner in owners_of_every_kind()[::3]:
        spent.append(
            TaskFactory(
                owner=owner, status="running", heartbeat_at=stale, attempts=3, max_attempts=3
            )
        )
        TaskCallback.objects.create(task=spent[-1], url=f"https://cb.example.com/{owner.pk}")
        requeued.append(TaskFactory(owner=owner, status="running", heartbeat_at=stale, attempts=1))
    expected = planned(spent)
    assert task_services.tasks_rescue() == {"requeued": len(requeued), "failed": len(spent)}
    assert written() == expected and expected


def test_an_expiry_webhook_is_delivered_signed_with_its_row_id(
    user,
    sent,
    committed,
    settings,
    _loopback_only,  # noqa: F811
):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    with HTTPServer([Answer(204, b"")]) as receiver:
        user.notify_email = []
        user.webhook_url = receiver.url("/hooks")
        user.save()
        user_services.user_webhook_secret_rotate(user=user)
        task = TaskFactory(owner=user, status=TaskStatus.RUNNING, deadline=timezone.now() - PAST)
        assert committed(task_services.tasks_expire) == 1
        (message,) = sent
        assert jobs.deliver_notification(message) == "delivered"
    (request,) = receiver.requests
    assert request.headers["webhook-id"] == message
    body = json.loads(request.body)
    assert body["type"] == "task.failed"
    assert body["data"]["id"] == str(task.pk) and body["data"]["status"] == "failed"
    assert body["data"]["error"] == "deadline exceeded"
    assert Notification.objects.get().status == "delivered"


def expired_webhooks(user, count, url):
    """``count`` tasks of ``user`` (a webhook at ``url``) past their deadline."""
    user.notify_email = []
    user.webhook_url = url
    user.save()
    user_services.user_webhook_secret_rotate(user=user)
    TaskFactory.create_batch(count, owner=user, status="pending", deadline=timezone.now() - PAST)


def test_a_large_sweep_sends_a_message_per_batch_and_each_batch_is_delivered(
    user,
    committed,
    monkeypatch,
    settings,
    _loopback_only,  # noqa: F811
):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    count = 2 * services.DELIVERY_BATCH + 1
    messages = []

    def send_messages(name, arguments, *, queue, rank=None):
        messages.extend((name, queue, args) for args in arguments)
        return len(arguments)

    monkeypatch.setattr(services.queue, "send_messages", send_messages)
    with HTTPServer([Answer(204, b"")] * count) as receiver:
        expired_webhooks(user, count, receiver.url("/hooks"))
        assert committed(task_services.tasks_expire) == count
        assert {(name, queue) for name, queue, _ in messages} == {
            ("backend.notifications.jobs.deliver_notifications", "long")
        }
        batches = [args[0] for _, _, args in messages]
        assert [len(batch) for batch in batches] == [services.DELIVERY_BATCH] * 2 + [1]
        ids = [pk for batch in batches for pk in batch]
        assert sorted(ids) == sorted(
            str(pk) for pk in Notification.objects.values_list("pk", flat=True)
        )
        ended = [jobs.deliver_notifications(batch) for batch in batches]
        # A message delivered again (a worker lost before its ack) sends nothing twice.
        again = jobs.deliver_notifications(batches[-1])
    assert ended == [{"delivered": services.DELIVERY_BATCH}] * 2 + [{"delivered": 1}]
    assert again == {"skipped": 1}
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(ids)
    assert set(Notification.objects.values_list("status", flat=True)) == {"delivered"}


def test_the_batches_the_broker_did_not_take_are_left_to_the_dispatcher(
    user, committed, monkeypatch
):
    expired_webhooks(user, services.DELIVERY_BATCH + 5, "http://127.0.0.1:9/hooks")
    taken = []

    def send_messages(name, arguments, *, queue, rank=None):  # the broker fails after the first
        taken.extend(arguments[0][0])
        return 1

    monkeypatch.setattr(services.queue, "send_messages", send_messages)
    assert committed(task_services.tasks_expire) == services.DELIVERY_BATCH + 5
    assert len(taken) == services.DELIVERY_BATCH
    marked = set(
        str(pk)
        for pk in Notification.objects.filter(enqueued_at__isnull=False).values_list(
            "pk", flat=True
        )
    )
    assert marked == set(taken)
    assert Notification.objects.filter(enqueued_at__isnull=True).count() == 5
    # The dispatcher sends those five (the first batch is not due again yet).
    taken.clear()
    assert services.notifications_dispatch() == {"due": 5, "sent": 5}
    assert len(taken) == 5 and not set(taken) & marked

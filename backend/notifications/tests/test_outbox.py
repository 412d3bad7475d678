"""The outbox: which state changes write which notifications, in the same transaction."""

import dataclasses
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backend.notifications.models import Notification, TaskCallback
from backend.tasks import jobs, services, types
from backend.tasks.models import Task, TaskStatus
from backend.tasks.services import execution
from backend.tasks.tests.factories import TaskFactory
from backend.tasks.types import base as types_base

pytestmark = pytest.mark.django_db

ALL = ["task.created", "task.completed", "task.failed", "task.cancelled"]


def rows(**filters):
    return sorted(
        Notification.objects.filter(**filters).values_list("event", "channel", "target"),
    )


def listening(user, *, events=ALL, webhook="https://hooks.example.com/in"):
    user.notify_email = events
    user.webhook_url = webhook
    user.save()
    return user


def test_create_writes_the_chosen_channels(user):
    listening(user)
    task = services.task_create(owner=user, task_type="sum", input_data={"numbers": [1]})
    assert rows(task_id=task.pk) == [
        ("task.created", "email", user.email),
        ("task.created", "webhook", "https://hooks.example.com/in"),
    ]
    notification = Notification.objects.get(task_id=task.pk, channel="email")
    assert notification.status == "pending" and notification.attempts == 0
    assert notification.next_attempt_at <= timezone.now()


def test_by_default_only_failures_are_mailed_and_nothing_else_is_written(user):
    task = services.task_create(owner=user, task_type="manual", input_data={})
    services.task_cancel(task=task, actor=user)
    assert not Notification.objects.exists()
    assert user.notify_email == ["task.failed"]


def test_no_address_no_mail(user):
    listening(user, webhook="")
    user.email = None
    user.save()
    services.task_create(owner=user, task_type="sum", input_data={"numbers": [1]})
    assert not Notification.objects.exists()


def test_a_rolled_back_change_leaves_no_notification(user):
    listening(user)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.task_create(owner=user, task_type="sum", input_data={"numbers": [1]})
        raise RuntimeError("the request failed after the create")
    assert not Task.objects.exists() and not Notification.objects.exists()


def test_a_callback_url_hears_every_event_of_its_task(user):
    task = services.task_create(
        owner=user, task_type="manual", input_data={}, callback_url="https://cb.example.com/t"
    )
    assert TaskCallback.objects.get(task=task).url == "https://cb.example.com/t"
    services.task_complete(task=task, actor=user)
    assert rows(task_id=task.pk) == [
        ("task.completed", "callback", "https://cb.example.com/t"),
        ("task.created", "callback", "https://cb.example.com/t"),
    ]


def test_cancel_and_manual_complete_notify(user):
    listening(user, webhook="")
    cancelled = services.task_create(owner=user, task_type="manual", input_data={})
    services.task_cancel(task=cancelled, actor=user)
    done = services.task_create(owner=user, task_type="manual", input_data={})
    services.task_complete(task=done, actor=user, result={"ok": 1})
    assert rows(task_id=cancelled.pk, event="task.cancelled") == [
        ("task.cancelled", "email", user.email)
    ]
    assert rows(task_id=done.pk, event="task.completed") == [
        ("task.completed", "email", user.email)
    ]


def _statements(captured) -> list[str]:
    return [
        q["sql"]
        for q in captured.captured_queries
        if not q["sql"].startswith(("BEGIN", "SAVEPOINT", "RELEASE SAVEPOINT"))
    ]


@pytest.mark.parametrize("instant", [True, False])
def test_a_run_that_notifies_writes_them_with_its_outcome(user, monkeypatch, instant):
    """Read (an instant type: SELECT) or claim (UPDATE … RETURNING), then the outcome, which
    reads the owner's settings as they are when the run ends. PostgreSQL: one statement, the
    guarded UPDATE and the notifications' INSERT; SQLite: the UPDATE hands the settings back
    and the INSERT follows, in the outcome's transaction."""
    kind = dataclasses.replace(types.get("sum"), instant=instant)
    monkeypatch.setitem(types_base._REGISTRY, "sum", kind)
    listening(user, events=["task.completed"], webhook="")
    task = TaskFactory(owner=user, input_data={"numbers": [1, 2]})
    with CaptureQueriesContext(connection) as captured:
        assert jobs.run_task(str(task.pk), "sum") == "completed"
    if connection.vendor == "postgresql":
        first, finish = (q["sql"] for q in captured.captured_queries)
        # A run's own commits are not flushed one by one (services/execution.py); the
        # notifications are in the outcome's statement, and so its commit. A read writes
        # nothing, so has no commit to relax.
        relaxed = execution.RELAXED + " "
        assert first.startswith(relaxed) != instant
        assert finish.startswith(execution.RELAXED + ",")
        first = first.removeprefix(relaxed)
        assert "changed AS ( UPDATE" in finish and "written AS (INSERT" in finish
    else:
        first, finish, insert = _statements(captured)
        assert finish.lstrip().startswith("UPDATE") and "RETURNING" in finish
        assert insert.startswith("INSERT")
    if instant:
        assert first.startswith("SELECT")
    else:
        assert first.lstrip().startswith("UPDATE") and "RETURNING" in first
    assert rows(task_id=task.pk) == [("task.completed", "email", user.email)]


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_a_run_tells_whom_the_settings_name_when_it_ends(user, outcome):
    """The owner's settings changed while the task ran (a countdown runs up to an hour):
    its outcome is told to the webhook and by the mail they name when it ends. Before, the
    ones read when it started were told (the old webhook's notification then failed as
    "changed after the event"), and a mail chosen meanwhile was not sent."""
    listening(user, events=[], webhook="https://old.example.com/in")
    task = TaskFactory(owner=user, task_type="countdown", input_data={"seconds": 60})
    claimed = services.task_claim(task_id=task.pk)
    listening(user, events=[f"task.{outcome}"], webhook="https://new.example.com/in")
    if outcome == "completed":
        assert services.task_finish(task=claimed, result={"done": True})
    else:
        assert services.task_fail(task=claimed, error="boom")
    assert rows(task_id=task.pk) == [
        (f"task.{outcome}", "email", user.email),
        (f"task.{outcome}", "webhook", "https://new.example.com/in"),
    ]


def test_a_failed_run_notifies_by_default(user):
    task = TaskFactory(owner=user, input_data={"numbers": "not a list"})
    assert jobs.run_task(str(task.pk)) == "failed"
    assert rows(task_id=task.pk) == [("task.failed", "email", user.email)]


def test_a_discarded_result_writes_no_notification(user):
    listening(user)
    task = TaskFactory(owner=user)
    claimed = services.task_claim(task_id=task.pk)
    services.task_cancel(task=Task.objects.get(pk=task.pk), actor=user)
    Notification.objects.all().delete()
    assert not services.task_finish(task=claimed, result={"result": 1})
    assert not Notification.objects.exists()


def test_preferences_are_read_when_the_claim_did_not_bring_them(user):
    listening(user, events=["task.completed"], webhook="")
    task = TaskFactory(owner=user, status=TaskStatus.RUNNING, attempts=1)
    assert services.task_finish(task=Task.objects.get(pk=task.pk), result=1)
    assert rows(task_id=task.pk) == [("task.completed", "email", user.email)]


def test_expiry_notifies_every_owner_in_bulk(user, other_user):
    listening(other_user, events=["task.failed"], webhook="https://hooks.example.com/o")
    past = timezone.now() - timedelta(seconds=1)
    mine = TaskFactory(owner=user, deadline=past)
    theirs = TaskFactory(owner=other_user, deadline=past, status=TaskStatus.RUNNING)
    assert services.tasks_expire() == 2
    assert rows(task_id=mine.pk) == [("task.failed", "email", user.email)]
    assert rows(task_id=theirs.pk) == [
        ("task.failed", "email", other_user.email),
        ("task.failed", "webhook", "https://hooks.example.com/o"),
    ]


def test_expiry_of_an_admin_selection_joins_other_tables(user, other_user):
    past = timezone.now() - timedelta(seconds=1)
    TaskFactory(owner=user, deadline=past)
    TaskFactory(owner=other_user, deadline=past)
    picked = Task.objects.filter(owner__username=user.username)
    assert services.tasks_expire(queryset=picked) == 1
    assert list(Notification.objects.values_list("user_id", flat=True)) == [user.pk]


def test_rescue_failures_notify(user, settings):
    # Shorter than the database server has been up (the rescue waits that long after it starts).
    settings.TASK_HEARTBEAT_TIMEOUT = 1
    stale = timezone.now() - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT + 5)
    lost = TaskFactory(
        owner=user, status=TaskStatus.RUNNING, heartbeat_at=stale, attempts=3, max_attempts=3
    )
    TaskFactory(owner=user, status=TaskStatus.RUNNING, heartbeat_at=stale, attempts=1)
    assert services.tasks_rescue() == {"requeued": 1, "failed": 1}
    assert rows() == [("task.failed", "email", user.email)]
    assert Notification.objects.get().task_id == lost.pk

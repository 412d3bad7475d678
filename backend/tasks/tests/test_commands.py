import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from backend.tasks import queue
from backend.tasks.models import TaskStatus

from .factories import TaskFactory

pytestmark = pytest.mark.django_db


def run(name: str) -> str:
    out = StringIO()
    call_command(name, stdout=out)
    return out.getvalue()


def test_expire_tasks(user):
    task = TaskFactory(owner=user, deadline=timezone.now() - timedelta(seconds=1))
    assert re.fullmatch(r"expired 1 task\(s\) in \d+\.\d\d s", run("expire_tasks").strip())
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED and task.error == "deadline exceeded"


def test_dispatch_tasks(user, monkeypatch):
    monkeypatch.setattr(queue, "publish", lambda jobs: [job.id for job in jobs])
    TaskFactory(owner=user, status=TaskStatus.SCHEDULED, run_at=timezone.now())
    assert run("dispatch_tasks").strip() == (
        "released 1 scheduled task(s); sent 1 of 1 pending task(s)"
    )


def test_dispatch_tasks_resends_sooner_when_asked(user):
    """A task whose message a worker killed outright took along is sent again after
    TASK_REDISPATCH_AFTER (5 min); an operator could not hurry it."""
    from django.core.management import CommandError

    from backend.tasks.models import Task

    sent = timezone.now() - timedelta(seconds=60)
    task = TaskFactory(owner=user, status=TaskStatus.PENDING)
    Task.objects.filter(pk=task.pk).update(enqueued_at=sent)
    assert "sent 0 of 0 pending" in run("dispatch_tasks")
    out = StringIO()
    call_command("dispatch_tasks", "--resend-after", "30", stdout=out)
    assert "sent 1 of 1 pending" in out.getvalue()
    task.refresh_from_db()
    assert task.enqueued_at > sent
    with pytest.raises(CommandError, match="must be 0 to"):
        call_command("dispatch_tasks", "--resend-after", "-1")


def test_dispatch_tasks_sends_every_due_task_never_sent_ones_first(user, monkeypatch):
    """It sent one batch of 500, said "sent 500 of 500" and exited 0 with 1,201 still
    unsent; and the batch was the oldest tasks, sent once already, before those never
    sent (within a priority now). (Batches of 2 here.)"""
    from backend.tasks import services
    from backend.tasks.models import Task

    batches = []

    def publish(jobs):
        batches.append([job.id for job in jobs])
        return [job.id for job in jobs]

    monkeypatch.setattr(queue, "publish", publish)
    long_ago = timezone.now() - timedelta(hours=1)
    resent = [TaskFactory(owner=user, status=TaskStatus.PENDING) for _ in range(3)]
    Task.objects.filter(pk__in=[task.pk for task in resent]).update(enqueued_at=long_ago)
    never = [TaskFactory(owner=user, status=TaskStatus.PENDING) for _ in range(5)]
    urgent = TaskFactory(owner=user, status=TaskStatus.PENDING, priority="urgent")
    Task.objects.filter(pk=urgent.pk).update(enqueued_at=long_ago)  # a lost message's

    outcome = services.tasks_dispatch_all(batch_size=2, resend_after=0)

    assert outcome == {"released": 0, "sent": 9, "due": 9}
    sent = [task_id for batch in batches for task_id in batch]
    assert sent[0] == urgent.pk  # by priority first
    assert set(sent[1:6]) == {task.pk for task in never}
    assert set(sent[6:]) == {task.pk for task in resent} and len(sent) == 9
    assert not Task.objects.filter(enqueued_at__isnull=True).exists()


def test_dispatch_tasks_counts_every_task_left_when_the_broker_fails_midway(user, monkeypatch):
    from backend.tasks import services

    calls = []

    def publish(jobs):  # the broker takes the first batch, then nothing
        calls.append(len(jobs))
        return [job.id for job in jobs] if len(calls) == 1 else []

    monkeypatch.setattr(queue, "publish", publish)
    for _ in range(5):
        TaskFactory(owner=user, status=TaskStatus.PENDING)
    assert services.tasks_dispatch_all(batch_size=2) == {"released": 0, "sent": 2, "due": 5}


def stale_running_task(user, settings):
    """A running task whose heartbeat stopped, as the rescue finds it."""
    # Shorter than the database server has been up (the rescue waits that long after it starts).
    settings.TASK_HEARTBEAT_TIMEOUT = 1
    stale = timezone.now() - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT + 1)
    return TaskFactory(owner=user, status=TaskStatus.RUNNING, heartbeat_at=stale, attempts=1)


def test_rescue_tasks(user, settings, monkeypatch):
    monkeypatch.setattr(queue, "publish", lambda jobs: [job.id for job in jobs])
    task = stale_running_task(user, settings)
    assert run("rescue_tasks").strip() == (
        "requeued 1 and failed 0 stale task(s); sent 1 of 1 pending task(s)"
    )
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING


@pytest.mark.parametrize(
    ("command", "printed"),
    [
        # It printed "sent 0 of 1" and exited 0: a script checking $? was told it worked.
        ("dispatch_tasks", "sent 0 of 1 pending"),
        # It printed "sent 0 task(s)" and exited 0 where dispatch_tasks exits 1.
        ("rescue_tasks", "requeued 1 and failed 0 stale task(s); sent 0 of 1 pending"),
    ],
)
def test_a_command_sending_tasks_exits_1_when_the_broker_takes_nothing(
    user, settings, broker_down, command, printed
):
    from django.core.management import CommandError

    if command == "rescue_tasks":
        task = stale_running_task(user, settings)
    else:
        task = TaskFactory(owner=user, status=TaskStatus.PENDING)
    out = StringIO()
    with pytest.raises(CommandError, match=r"^1 pending task\(s\) could not be sent"):
        call_command(command, stdout=out)
    assert printed in out.getvalue()
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING and task.enqueued_at is None

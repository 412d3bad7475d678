"""The limit under real concurrency: many threads, each with its own database connection."""

import threading
import time

import pytest

from backend.common.errors import Conflict
from backend.common.tests.concurrency import at_once, wait_until_a_session_waits_on_a_lock
from backend.tasks import services
from backend.tasks.models import ACTIVE_STATUSES, Task, TaskStatus
from backend.users.tests.factories import UserFactory

from .factories import TaskFactory

pytestmark = pytest.mark.django_db(transaction=True)

CONCURRENT = 50


def race(action, count=CONCURRENT) -> dict[str, int]:
    """Run ``action(i)`` in ``count`` threads released at once; count outcomes."""
    outcomes = {"ok": 0, "limit": 0, "other": 0}
    errors = []
    for outcome in at_once(action, count):
        if isinstance(outcome, Conflict):
            key = "limit" if outcome.code == "active_task_limit" else "other"
        elif isinstance(outcome, Exception):
            key = "other"
            errors.append(repr(outcome))
        else:
            key = "ok"
        outcomes[key] += 1
    assert not errors, errors[:3]
    return outcomes


def test_fifty_concurrent_creates_make_exactly_five(settings):
    user = UserFactory()
    outcomes = race(lambda i: services.task_create(owner=user, task_type="manual", name=f"t{i}"))
    assert outcomes == {"ok": 5, "limit": 45, "other": 0}
    assert Task.objects.filter(assignee=user, status__in=ACTIVE_STATUSES).count() == 5


def test_concurrent_assigns_to_one_user_stop_at_five():
    target = UserFactory()
    owners = UserFactory.create_batch(CONCURRENT)
    tasks = [TaskFactory(owner=o, task_type="manual", input_data={}) for o in owners]
    outcomes = race(lambda i: services.task_assign(task=tasks[i], actor=owners[i], assignee=target))
    assert outcomes["ok"] == 5 and outcomes["limit"] == CONCURRENT - 5
    assert Task.objects.filter(assignee=target, status__in=ACTIVE_STATUSES).count() == 5


def test_concurrent_retries_stop_at_five():
    user = UserFactory()
    failed = TaskFactory.create_batch(20, owner=user, status=TaskStatus.FAILED)
    outcomes = race(lambda i: services.task_retry(task=failed[i], actor=user), count=20)
    assert outcomes["ok"] == 5 and outcomes["limit"] == 15
    assert Task.objects.filter(assignee=user, status__in=ACTIVE_STATUSES).count() == 5


def test_a_start_during_a_delete_waits_and_finds_the_task_gone(monkeypatch):
    """Django's delete reads the rows, then deletes by key: a start committed in between
    (15 of 30 tries in a review) left both answers successful and a running task deleted.
    Here the start is sent at that very moment and given a second: it must not succeed."""
    from django.db import connection, connections
    from django.db.models.deletion import Collector

    if connection.vendor != "postgresql":
        pytest.skip("SQLite: the delete's transaction holds the write lock from its start")
    owner, assignee = UserFactory(), UserFactory()
    task = services.task_create(owner=owner, task_type="manual", name="m", assignee=assignee)
    started = {}

    def start():
        try:
            started["task"] = services.task_start(task=Task.objects.get(pk=task.pk), actor=assignee)
        except Exception as exc:
            started["error"] = exc
        finally:
            connections.close_all()

    delete = Collector.delete

    def delete_after_a_start(self):
        starter = threading.Thread(target=start)
        starter.start()
        # Done at once without the lock; with it, waits for the commit.
        wait_until_a_session_waits_on_a_lock(unless=lambda: not starter.is_alive())
        return delete(self)

    monkeypatch.setattr(Collector, "delete", delete_after_a_start)
    services.task_delete(task=task, actor=owner)
    monkeypatch.undo()
    for _ in range(100):
        if started:
            break
        time.sleep(0.05)
    assert "task" not in started, "the start succeeded on a task that was then deleted"
    assert not Task.objects.filter(pk=task.pk).exists()


def test_a_create_during_a_purge_of_the_same_users_tasks_does_not_deadlock():
    """A transaction deleting several of a user's tasks changes their kept count twice, so
    at commit it checks that row's foreign key to the user (a KEY SHARE lock). A create for
    that user held the user's row FOR UPDATE (the limit's lock) and waited for the count:
    each waited on the other, and PostgreSQL cancelled one (the purge stopped, the create
    answered 500). The limit's lock is FOR NO KEY UPDATE now, which a key check passes."""
    from django.db import connection, connections, transaction

    if connection.vendor != "postgresql":
        pytest.skip("the kept counts and the limit's row lock are PostgreSQL's")
    user = UserFactory()
    old = TaskFactory.create_batch(2, owner=user, status=TaskStatus.COMPLETED)
    deleted, outcome = threading.Event(), {}

    def create():
        deleted.wait(10)
        try:
            outcome["created"] = services.task_create(owner=user, task_type="manual", name="n")
        except Exception as exc:
            outcome["error"] = exc
        finally:
            connections.close_all()

    creator = threading.Thread(target=create)
    creator.start()
    try:
        with transaction.atomic():
            Task.objects.filter(pk__in=[task.pk for task in old]).delete()
            deleted.set()
            # The create takes the user's row, then waits for the count.
            wait_until_a_session_waits_on_a_lock(unless=lambda: not creator.is_alive())
    finally:
        creator.join(20)
    assert "error" not in outcome, outcome.get("error")
    assert Task.objects.filter(owner=user).count() == 1

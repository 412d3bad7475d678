"""Outcomes of completed instant runs, written in batches by a thread of a worker's pool
process (``backend/tasks/outcomes.py``), and the statement that writes them."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
from django.db import DatabaseError, OperationalError, connection, transaction
from django.utils import timezone

from backend.notifications.models import Event, Notification
from backend.tasks import jobs, outcomes, runner, services
from backend.tasks.models import Task, TaskStatus

from .factories import TaskFactory
from .processes import wait_for

POSTGRESQL = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="a run from its message's input is one statement on PostgreSQL only",
)


class Written:
    """A ``write`` that records the ids of each batch; ``gate``, when given, holds each
    write until it is set (a database that does not answer)."""

    def __init__(self, gate: threading.Event | None = None, fail_first: bool = False):
        self.batches: list[list[int]] = []
        self.gate = gate
        self.fail_first = fail_first

    def __call__(self, batch: list[dict]) -> None:
        if self.gate is not None:
            assert self.gate.wait(30)
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("the write failed")
        self.batches.append([outcome["id"] for outcome in batch])


def test_outcomes_wait_for_the_linger_then_go_together():
    written = Written()
    batches = outcomes.Batches(written, linger=0.2)
    for n in range(3):
        batches.add({"id": n})
    wait_for(lambda: written.batches, timeout=10, what="the batch")
    assert written.batches == [[0, 1, 2]]
    batches.close()
    assert written.batches == [[0, 1, 2]]


def test_a_full_batch_goes_without_waiting_for_the_linger():
    written = Written()
    batches = outcomes.Batches(written, linger=60, batch=4)
    for n in range(5):
        batches.add({"id": n})
    wait_for(lambda: written.batches, timeout=10, what="the full batch")
    assert written.batches == [[0, 1, 2, 3]]
    assert batches.held() == 1  # the fifth waits for the linger (a minute here)
    batches.close()
    assert written.batches == [[0, 1, 2, 3], [4]]


def test_a_process_that_stops_writes_what_it_holds_first():
    written = Written()
    batches = outcomes.Batches(written, linger=60)
    batches.add({"id": 1})
    batches.add({"id": 2})
    batches.close()
    assert written.batches == [[1, 2]] and batches.held() == 0


def test_runs_wait_for_room_while_the_database_does_not_answer():
    """Held outcomes are runs whose messages are gone: while writes do not go through, a
    process holds at most ``held`` of them, and a run that comes after waits for room, for a
    while (then it writes its own outcome, as a run did before: a database error has the
    run asked again)."""
    gate = threading.Event()
    written = Written(gate)
    batches = outcomes.Batches(written, linger=0.01, batch=2, held=3)
    batches.add({"id": 0})
    batches.add({"id": 1})  # a full batch: taken, its write waits at the gate
    wait_for(lambda: batches._writing, timeout=10, what="the write to start")
    assert batches.add({"id": 2}) is True
    # No room: after its wait, a run writes its outcome itself.
    assert batches.add({"id": 3}, timeout=0.2) is False
    added = []
    adder = threading.Thread(target=lambda: added.append(batches.add({"id": 4}, timeout=30)))
    adder.start()
    adder.join(0.5)
    assert adder.is_alive(), "a run went on while its process already held three outcomes"
    gate.set()
    adder.join(10)
    assert added == [True]
    batches.close()
    assert [n for batch in written.batches for n in batch] == [0, 1, 2, 4]


def test_a_write_that_fails_is_logged_and_later_ones_still_go(caplog):
    written = Written(fail_first=True)
    batches = outcomes.Batches(written, linger=0.01)
    with caplog.at_level(logging.ERROR, logger="backend.tasks.outcomes"):
        batches.add({"id": 1})
        wait_for(lambda: batches.held() == 0, timeout=10, what="the failed write")
        batches.add({"id": 2})
        batches.close()
    assert written.batches == [[2]]
    assert "1 outcomes not written; the dispatcher sends their tasks again" in caplog.text


def test_only_a_started_process_batches(settings):
    outcome = {"id": 1}
    assert outcomes.batched(outcome) is False  # tests, --pool=solo: each run writes its own
    for linger, amqp in ((0, False), (0.05, True)):  # off; RabbitMQ gives messages back
        settings.TASK_OUTCOME_LINGER, settings.BROKER_IS_AMQP = linger, amqp
        outcomes.start(lambda batch: None)
        try:
            assert outcomes.batched(outcome) is False
        finally:
            outcomes.stop()
    settings.TASK_OUTCOME_LINGER, settings.BROKER_IS_AMQP = 0.05, False
    outcomes.start(lambda batch: None)
    try:
        assert outcomes.batched(outcome) is True
    finally:
        outcomes.stop()


def _outcome(task, **changes) -> dict:
    now = timezone.now()
    return {
        "id": task.pk,
        "task_type": "sum",
        "started_at": now - timedelta(milliseconds=2),
        "completed_at": now,
        "result": {"sum": 6},
        **changes,
    }


@POSTGRESQL
@pytest.mark.django_db
def test_many_outcomes_in_one_statement_each_under_its_guards(user, django_assert_num_queries):
    """Each row goes pending → completed as ``task_finish_unread`` takes it; a task that
    is no longer pending, ended past its deadline, or is of another type than its message
    said keeps its state, and its result is dropped. The deadline is the run's: one that
    ended in time counts though the batch is written after it."""
    first, in_time, cancelled, overdue, other = (
        TaskFactory(owner=user, input_data={"numbers": [1, 2, 3]}) for _ in range(5)
    )
    now = timezone.now()
    Task.objects.filter(pk=cancelled.pk).update(status=TaskStatus.CANCELLED)
    Task.objects.filter(pk__in=[in_time.pk, overdue.pk]).update(deadline=now - timedelta(seconds=1))
    Task.objects.filter(pk=other.pk).update(task_type="reverse")
    given = [_outcome(task) for task in (first, in_time, cancelled, overdue, other)]
    given[1].update(
        result={"sum": 7},
        started_at=now - timedelta(seconds=2, milliseconds=2),
        completed_at=now - timedelta(seconds=2),
    )

    with django_assert_num_queries(1):
        changed = services.tasks_finish_unread(given)

    assert set(changed) == {first.pk, in_time.pk}
    for task, outcome in zip((first, in_time), given, strict=False):
        task.refresh_from_db()
        assert task.status == TaskStatus.COMPLETED and task.progress == 100
        assert task.result == outcome["result"] and task.error is None
        assert task.attempts == 1
        assert (task.started_at, task.completed_at) == (
            outcome["started_at"],
            outcome["completed_at"],
        )
        assert task.heartbeat_at == task.started_at and task.updated_at == task.completed_at
    statuses = dict(
        Task.objects.filter(pk__in=[cancelled.pk, overdue.pk, other.pk]).values_list("pk", "status")
    )
    assert statuses == {
        cancelled.pk: TaskStatus.CANCELLED,
        overdue.pk: TaskStatus.PENDING,
        other.pk: TaskStatus.PENDING,
    }
    assert services.tasks_finish_unread(given[:1]) == []  # written once, whatever repeats


@POSTGRESQL
@pytest.mark.django_db
def test_the_batchs_notifications_are_those_of_the_tasks_it_completed(user):
    type(user).objects.filter(pk=user.pk).update(webhook_url="http://127.0.0.1:9/hook")
    done, cancelled = (TaskFactory(owner=user, input_data={"numbers": [1]}) for _ in range(2))
    Task.objects.filter(pk=cancelled.pk).update(status=TaskStatus.CANCELLED)

    services.tasks_finish_unread([_outcome(done), _outcome(cancelled)])

    sent = Notification.objects.filter(event=Event.COMPLETED)
    assert list(sent.values_list("task_id", "target")) == [(done.pk, "http://127.0.0.1:9/hook")]


@POSTGRESQL
@pytest.mark.django_db(transaction=True)
def test_a_pool_process_records_its_instant_runs_when_the_batch_goes(user, settings):
    """What a worker's pool process does (``jobs._batch_outcomes``): the run returns with
    its task still pending; the outcome is written with the batch, here when the process
    stops (the linger is longer than the test)."""
    settings.TASK_OUTCOME_LINGER, settings.BROKER_IS_AMQP = 5, False  # as with Redis
    tasks = [TaskFactory(owner=user, input_data={"numbers": [n, 2]}) for n in range(3)]
    jobs._batch_outcomes()
    try:
        for task in tasks:
            ran = jobs.run_task(str(task.pk), "sum", {"numbers": task.input_data["numbers"]})
            assert ran == runner.BATCHED
        assert set(Task.objects.values_list("status", flat=True)) == {TaskStatus.PENDING}
    finally:
        jobs._write_held_outcomes()
    for n, task in enumerate(tasks):
        task.refresh_from_db()
        assert task.status == TaskStatus.COMPLETED and task.result == {"result": n + 2}


def _refused_in_the_middle(user) -> tuple[list[Task], list[dict]]:
    """Three pending tasks and their outcomes; the second one's result has a NUL, which
    PostgreSQL refuses (a run makes its result storable before it gets this far)."""
    tasks = [TaskFactory(owner=user, input_data={"numbers": [1]}) for _ in range(3)]
    batch = [_outcome(task) for task in tasks]
    batch[1]["result"] = {"text": "a\x00b"}
    return tasks, batch


def _written(batch: list[dict], caplog) -> list[str]:
    """``runner.write_outcomes(batch)``, as the writer thread calls it; the statuses of the
    batch's tasks after it, in its order."""
    with caplog.at_level(logging.WARNING, logger="backend.tasks.runner"):
        runner.write_outcomes(batch)
    statuses = dict(Task.objects.values_list("pk", "status"))
    return [statuses[outcome["id"]] for outcome in batch]


@POSTGRESQL
@pytest.mark.django_db(transaction=True)  # the writer's connection is in autocommit
def test_a_row_the_database_refuses_fails_its_task_and_not_the_batch(user, caplog):
    """One outcome PostgreSQL cannot store refuses the whole statement: each is then written
    alone, the others complete, and that one's task fails with the reason instead of
    running again with the next batch."""
    (first, refused, _), batch = _refused_in_the_middle(user)
    with pytest.raises(DatabaseError), transaction.atomic():
        services.tasks_finish_unread(batch)  # the statement alone is refused whole

    statuses = _written(batch, caplog)

    assert statuses == [TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.COMPLETED]
    refused.refresh_from_db()
    assert refused.error.startswith("the result could not be stored (DataError: ")
    assert refused.result is None and refused.attempts == 1
    assert "3 outcomes refused together" in caplog.text
    assert Task.objects.get(pk=first.pk).result == {"sum": 6}


@POSTGRESQL
@pytest.mark.django_db(transaction=True)
def test_a_lost_connection_while_writing_alone_leaves_the_rest_to_the_dispatcher(
    user, monkeypatch, caplog
):
    """The connection lost while a refused batch is written an outcome at a time: those
    not written yet stay pending, for the dispatcher to send again."""
    _, batch = _refused_in_the_middle(user)

    def connection_lost(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "task_fail_unread", connection_lost)
    statuses = _written(batch, caplog)

    assert statuses == [TaskStatus.COMPLETED, TaskStatus.PENDING, TaskStatus.PENDING]
    assert "2 outcomes not recorded" in caplog.text

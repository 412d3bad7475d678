"""End to end: the API, a real worker process and real beat, on the configured database and
broker. Waits poll the database with a deadline; nothing sleeps for a fixed time."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from backend.tasks import runner
from backend.tasks.models import Task, TaskStatus

from .processes import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _create(client, **body) -> dict:
    response = client.post("/api/tasks/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _task(task_id) -> Task:
    return Task.objects.get(pk=task_id)


def _wait_for_status(task_id, status: str, *, timeout: float, what: str) -> Task:
    def reached():
        task = _task(task_id)
        return task.status == status and task

    return wait_for(reached, timeout=timeout, what=what)


def test_submission_to_completion(cluster, user, client_for):
    cluster.start_worker()
    client = client_for(user)

    summed = _create(client, task_type="sum", input_data={"numbers": [1, 2, 3]})
    assert summed["status"] == "pending"
    done = _wait_for_status(summed["id"], TaskStatus.COMPLETED, timeout=30, what="sum to complete")
    assert done.result == {"result": 6}
    body = client.get(f"/api/tasks/{summed['id']}/").json()
    assert body["status"] == "completed" and body["result"] == {"result": 6}

    countdown = _create(client, task_type="countdown", input_data={"seconds": 3})
    seen = set()

    def finished():
        task = _task(countdown["id"])
        if task.status == TaskStatus.RUNNING:
            seen.add(task.progress)
        return task.status == TaskStatus.COMPLETED and task

    task = wait_for(finished, timeout=40, interval=0.05, what="countdown to complete")
    assert len(seen) >= 2, f"progress seen while running: {sorted(seen)}"
    assert task.result == {"message": "Countdown finished", "seconds": 3}
    assert task.progress == 100 and task.attempts == 1
    assert task.started_at and task.completed_at
    assert (task.completed_at - task.started_at).total_seconds() >= 3


def test_beat_expires_overdue_task_and_the_worker_stops(cluster, user, client_for):
    cluster.start_worker()
    cluster.start_beat()
    client = client_for(user)
    deadline = timezone.now() + timedelta(hours=1)
    created = _create(
        client, task_type="countdown", input_data={"seconds": 60}, deadline=deadline.isoformat()
    )
    # Beside it a manual task, which no run reports progress for: only beat's sweep expires it.
    manual = _create(client, task_type="manual", deadline=deadline.isoformat())

    wait_for(lambda: _task(created["id"]).status == TaskStatus.RUNNING, timeout=30, what="running")
    # The deadlines pass while the countdown runs (the API takes none in the past). A deadline
    # two seconds away passed before a loaded machine's worker started the task, and the
    # sweep then expired a pending task, not this test's running one.
    Task.objects.filter(pk__in=[created["id"], manual["id"]]).update(
        deadline=timezone.now() - timedelta(seconds=1)
    )
    swept = _wait_for_status(manual["id"], TaskStatus.FAILED, timeout=20, what="beat's expiry")
    assert swept.error == "deadline exceeded"
    task = _wait_for_status(created["id"], TaskStatus.FAILED, timeout=20, what="expiry")
    assert task.error == "deadline exceeded"
    assert task.completed_at is not None
    # The countdown noticed at its next progress report and stopped running: beat expired
    # it first, or the refused heartbeat did and the run expired it itself.
    worker = cluster.processes[0]
    wait_for(
        lambda: "no longer running" in worker.log() or "failed: deadline exceeded" in worker.log(),
        timeout=10,
        what="the countdown stopped",
    )
    frozen = _task(created["id"]).progress
    assert frozen < 100


def test_beat_registers_sweeps_in_the_database(cluster):
    cluster.start_beat()
    names = {"tasks.expire-overdue", "tasks.dispatch", "tasks.rescue-stale"}
    wait_for(
        lambda: (
            set(PeriodicTask.objects.filter(name__in=names).values_list("name", flat=True)) == names
        ),
        timeout=20,
        what="periodic tasks registered",
    )
    expiry = PeriodicTask.objects.get(name="tasks.expire-overdue")
    assert expiry.task == "backend.tasks.jobs.expire_overdue_tasks"
    assert expiry.interval.every == 1 and expiry.interval.period == "seconds"
    # A second beat start updates the same rows instead of adding new ones.
    cluster.stop()
    cluster.processes.clear()
    cluster.start_beat()
    wait_for(lambda: PeriodicTask.objects.filter(name__in=names).count() == 3, timeout=10)
    assert PeriodicTask.objects.filter(task__startswith="backend.tasks.jobs.").count() == 3


def test_dispatch_sends_tasks_the_broker_could_not_take(cluster, user, client_for, broker_down):
    client = client_for(user)
    created = _create(client, task_type="sum", input_data={"numbers": [2, 3]})
    task = _task(created["id"])
    assert task.status == TaskStatus.PENDING and task.enqueued_at is None
    broker_down.undo()  # the broker is back

    cluster.start_worker()
    cluster.start_beat()
    done = _wait_for_status(
        created["id"], TaskStatus.COMPLETED, timeout=30, what="dispatch then completion"
    )
    assert done.result == {"result": 5}
    # Sent first, marked after: a worker may finish the task before the dispatcher's mark
    # commits (seen on RabbitMQ), so the mark is waited for, not read at once.
    wait_for(
        lambda: _task(created["id"]).enqueued_at is not None,
        timeout=10,
        what="the dispatcher to mark the task sent",
    )


def test_scheduled_task_runs_when_its_time_comes(cluster, user, client_for):
    client = client_for(user)
    run_at = timezone.now() + timedelta(seconds=5)  # still ahead once the create is read
    created = _create(
        client, task_type="uppercase", input_data={"data": "later"}, run_at=run_at.isoformat()
    )
    assert created["status"] == "scheduled"
    cluster.start_worker()
    cluster.start_beat()
    done = _wait_for_status(
        created["id"], TaskStatus.COMPLETED, timeout=30, what="scheduled task to run"
    )
    assert done.result == {"result": "LATER"}
    assert done.started_at >= run_at


def test_rescue_after_the_worker_is_killed(cluster, user, client_for):
    first = cluster.start_worker()
    cluster.start_beat()
    client = client_for(user)
    # Long enough to be still running when the test, slowed by a loaded machine, kills it.
    created = _create(client, task_type="countdown", input_data={"seconds": 12})
    wait_for(
        lambda: (
            _task(created["id"]).status == TaskStatus.RUNNING and _task(created["id"]).progress > 0
        ),
        timeout=30,
        what="countdown running",
    )
    first.kill()  # SIGKILL to the main process and its pool: no chance to clean up
    assert _task(created["id"]).status == TaskStatus.RUNNING

    cluster.start_worker()
    done = _wait_for_status(
        created["id"], TaskStatus.COMPLETED, timeout=90, what="rescue, dispatch and a second run"
    )
    assert done.attempts == 2
    assert done.result == {"message": "Countdown finished", "seconds": 12}


def test_a_pool_process_killed_while_idle_is_replaced_and_tasks_run(cluster, user, client_for):
    """On the embedded broker the worker ran billiard's blocking pool, whose idle processes
    wait for a job on one shared pipe under one lock: a process killed while it held the
    lock (``kill -9`` of an idle pool process) left it held, and the worker ran no task
    again until restarted."""
    import os
    import signal

    worker = cluster.start_worker()
    client = client_for(user)
    first = _create(client, task_type="sum", input_data={"numbers": [1, 2]})
    _wait_for_status(first["id"], TaskStatus.COMPLETED, timeout=30, what="a first run")
    idle = wait_for(lambda: len(worker.children()) == 2 and worker.children(), timeout=10)
    for pid in idle:
        os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: len(worker.children()) == 2 and not set(worker.children()) & set(idle),
        timeout=30,
        what="both pool processes replaced",
    )
    created = [
        _create(client, task_type="sum", input_data={"numbers": [n, 1]})["id"] for n in range(4)
    ]
    for task_id in created:
        _wait_for_status(task_id, TaskStatus.COMPLETED, timeout=30, what="runs after the kill")


def test_a_stopping_worker_gives_back_the_messages_it_reserved(cluster, user, client_for):
    """A worker takes messages ahead of the one it runs (prefetch); stopped, it finishes the
    task it runs and hands the others back to the broker, so the next worker runs them at
    once. No beat runs here: no dispatcher could send them again."""
    first = cluster.start_worker(("long",), "--concurrency=1", "--prefetch-multiplier=4")
    client = client_for(user)
    # Still running after the creates below and the wait for the worker to take them.
    running = _create(client, task_type="countdown", input_data={"seconds": 15})
    _wait_for_status(running["id"], TaskStatus.RUNNING, timeout=30, what="countdown to start")
    waiting = [_create(client, task_type="countdown", input_data={"seconds": 1}) for _ in range(2)]
    # Redis and RabbitMQ hand the worker both at once. The embedded broker hands it one more
    # while its only process is busy (its consumer then waits for a free process), and a
    # stopping worker there goes on taking and running messages until its pool is idle.
    embedded = settings.CELERY_BROKER_URL.startswith("filesystem://")
    wait_for(
        lambda: first.log().count(" received") >= (2 if embedded else 3),
        timeout=30,
        what="the worker to take the waiting countdowns",
    )
    assert _task(running["id"]).status == TaskStatus.RUNNING

    first.terminate()
    first.proc.wait(timeout=60)  # a warm shutdown: the running countdown ends first
    assert _task(running["id"]).status == TaskStatus.COMPLETED
    left = [task for task in waiting if _task(task["id"]).status != TaskStatus.COMPLETED]
    if not embedded:
        assert len(left) == 2, "a stopping worker ran the messages it had only reserved"
    for task in left:
        assert _task(task["id"]).status == TaskStatus.PENDING
        assert _task(task["id"]).attempts == 0

    cluster.start_worker(("long",))
    for task in left:
        done = _wait_for_status(
            task["id"], TaskStatus.COMPLETED, timeout=30, what="a reserved countdown to run"
        )
        assert done.attempts == 1


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="a run from its message's input is one statement on PostgreSQL only",
)
def test_a_stopping_worker_writes_the_outcomes_its_processes_hold(cluster, user, client_for):
    """A worker's pool processes write their completed instant runs in batches
    (backend/tasks/outcomes.py): with a linger longer than the test, the runs are done and
    their tasks still pending; a warm shutdown writes them before the worker exits. No beat
    runs here: no dispatcher could send them again. Not on RabbitMQ (see below)."""
    cluster.env["TASK_OUTCOME_LINGER"] = "5"
    worker = cluster.start_worker(("tasks",))
    client = client_for(user)
    created = [
        _create(client, task_type="sum", input_data={"numbers": [n, 1]})["id"] for n in range(3)
    ]
    if settings.BROKER_IS_AMQP:
        # RabbitMQ gives a dead process's messages back: each run writes its own outcome.
        for task_id in created:
            _wait_for_status(task_id, TaskStatus.COMPLETED, timeout=30, what="a run")
        assert runner.BATCHED not in worker.log()
        return
    wait_for(lambda: worker.log().count(runner.BATCHED) == 3, timeout=30, what="the three runs")
    assert {_task(task_id).status for task_id in created} == {TaskStatus.PENDING}

    worker.terminate()
    worker.proc.wait(timeout=30)
    for n, task_id in enumerate(created):
        task = _task(task_id)
        assert task.status == TaskStatus.COMPLETED, task.status
        assert task.result == {"result": n + 1} and task.attempts == 1


def test_cancel_stops_a_running_countdown(cluster, user, client_for):
    worker = cluster.start_worker()
    client = client_for(user)
    created = _create(client, task_type="countdown", input_data={"seconds": 60})
    wait_for(
        lambda: _task(created["id"]).progress > 0, timeout=30, what="countdown to report progress"
    )
    response = client.post(f"/api/tasks/{created['id']}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    worker.wait_for_log("no longer running", timeout=10)
    progress = _task(created["id"]).progress
    # The worker is free again: the next task runs at once.
    summed = _create(client, task_type="sum", input_data={"numbers": [1]})
    wait_for(lambda: _task(summed["id"]).status == TaskStatus.COMPLETED, timeout=30)
    task = _task(created["id"])
    assert task.status == TaskStatus.CANCELLED and task.progress == progress

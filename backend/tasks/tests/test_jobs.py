"""The worker's side, called in-process: claim, run, record; errors never escape."""

import ast
import dataclasses
import logging
import time

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backend.celery import app as celery_app
from backend.notifications.tests.conftest import sent  # noqa: F401
from backend.tasks import jobs, queue, services, types
from backend.tasks.models import Task, TaskStatus
from backend.tasks.types import base as types_base

from .factories import TaskFactory

pytestmark = pytest.mark.django_db


def failing_first(real, error: BaseException, times: int = 1):
    """``real``, except that its first ``times`` calls raise ``error``; ``.calls`` counts
    every call."""

    def call(*args, **kwargs):
        call.calls += 1
        if call.calls <= times:
            raise error
        return real(*args, **kwargs)

    call.calls = 0
    return call


def test_run_task_completes_with_the_result(user):
    task = TaskFactory(owner=user, input_data={"numbers": [1, 2, 3]})
    assert jobs.run_task(str(task.pk)) == "completed"
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and task.result == {"result": 6}
    assert task.progress == 100 and task.started_at and task.completed_at


def test_duplicate_message_is_harmless(user):
    task = TaskFactory(owner=user)
    jobs.run_task(str(task.pk))
    assert jobs.run_task(str(task.pk)).startswith("skipped")
    task.refresh_from_db()
    assert task.attempts == 1


def test_missing_task_is_skipped():
    assert jobs.run_task("00000000-0000-0000-0000-000000000000").startswith("skipped")


def test_handler_error_fails_the_task_readably(user, caplog):
    task = TaskFactory(owner=user, input_data={"numbers": "not a list"})
    assert jobs.run_task(str(task.pk)) == "failed"
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert task.error.startswith("TypeError: ")
    # An error its type does not raise on purpose is a bug: logged with its traceback.
    [record] = [r for r in caplog.records if r.name == "backend.tasks.runner"]
    assert record.levelno == logging.ERROR and record.exc_info[0] is TypeError
    assert record.getMessage() == f"task {task.pk} (sum) failed"


def test_soft_time_limit_fails_the_task(user, monkeypatch):
    def too_slow(data, ctx):
        raise SoftTimeLimitExceeded()

    monkeypatch.setitem(
        types_base._REGISTRY, "sum", dataclasses.replace(types.get("sum"), handler=too_slow)
    )
    task = TaskFactory(owner=user)
    jobs.run_task(str(task.pk))
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED and task.error == "time limit exceeded"


@pytest.mark.django_db(transaction=True)
def test_a_run_waiting_on_a_slow_server_keeps_its_heartbeat_and_is_not_rescued(
    user, settings, monkeypatch
):
    """A mail to a slow server may take 12 x EMAIL_TIMEOUT without a progress report: the
    rescue took the run for a lost one while it still went on, and the mail went out five
    times. The run's process now beats for it every third of TASK_HEARTBEAT_TIMEOUT."""
    settings.TASK_HEARTBEAT_TIMEOUT = 3
    seen = {}

    def slow_send(data, ctx):
        time.sleep(4.5)  # past the timeout, without a word (an SMTP conversation)
        seen["rescued"] = services.tasks_rescue()["requeued"]
        return {"sent": 1}

    monkeypatch.setitem(
        types_base._REGISTRY, "email", dataclasses.replace(types.get("email"), handler=slow_send)
    )
    task = TaskFactory(owner=user, task_type="email", input_data={"to": "a@example.com"})
    assert jobs.run_task(str(task.pk)) == "completed"
    task.refresh_from_db()
    assert seen["rescued"] == 0
    assert task.status == TaskStatus.COMPLETED and task.attempts == 1
    assert (task.heartbeat_at - task.started_at).total_seconds() >= 3


def test_cancel_during_a_countdown_stops_it(user, monkeypatch):
    task = TaskFactory(owner=user, task_type="countdown", input_data={"seconds": 5})

    def tick(seconds):
        # The owner cancels while the countdown is on its first second.
        if Task.objects.get(pk=task.pk).status == TaskStatus.RUNNING:
            services.task_cancel(task=Task.objects.get(pk=task.pk), actor=user)

    monkeypatch.setattr("backend.tasks.types.arithmetic.time.sleep", tick)
    assert jobs.run_task(str(task.pk)).startswith("stopped")
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED and task.result is None


def test_manual_task_sent_to_a_worker_is_not_run(user):
    task = TaskFactory(owner=user, task_type="manual", input_data={})
    assert jobs.run_task(str(task.pk)) == "failed"
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED and "not run by workers" in task.error


def test_sweep_jobs_call_the_services(user, monkeypatch):
    monkeypatch.setattr(queue, "publish", lambda jobs: [job.id for job in jobs])
    assert jobs.expire_overdue_tasks() == 0
    TaskFactory(owner=user)
    assert jobs.dispatch_tasks() == {"released": 0, "sent": 1, "due": 1}
    assert jobs.rescue_stale_tasks() == {"requeued": 0, "failed": 0}


def test_publish_sends_through_the_pool(user):
    from .processes import purge_filesystem_broker

    task = TaskFactory(owner=user)
    assert queue.publish([queue.job_of(task)]) == [task.pk]
    assert queue.publish([]) == []
    purge_filesystem_broker()  # no message left behind for later tests


def test_a_pooled_connection_the_broker_closed_is_replaced_and_the_send_goes(user, monkeypatch):
    """After a broker restart each process's first send failed on its stale pooled
    connection (connection reset), tripped the breaker and left the task to the dispatcher."""
    from .processes import purge_filesystem_broker

    reset_once = failing_first(queue._send, ConnectionResetError(104, "Connection reset by peer"))
    monkeypatch.setattr(queue, "_send", reset_once)
    tasks = [TaskFactory(owner=user) for _ in range(3)]
    try:
        assert queue.publish([queue.job_of(t) for t in tasks]) == [t.pk for t in tasks]
        assert queue.accepting()
    finally:
        purge_filesystem_broker()


def test_a_send_that_times_out_is_not_tried_again(user, monkeypatch):
    calls = []

    def hangs(*args, **kwargs):
        calls.append(1)
        raise TimeoutError("timed out")

    monkeypatch.setattr(queue, "_send", hangs)
    assert queue.publish([queue.job_of(TaskFactory(owner=user))]) == []
    assert len(calls) == 1 and not queue.accepting()
    queue.breaker.reset()


def test_publish_with_the_broker_down_leaves_the_task_for_the_dispatcher(user, broker_down):
    task = TaskFactory(owner=user)
    assert queue.publish([queue.job_of(task)]) == []
    assert not queue.accepting()  # the breaker is open: the next sends skip the broker


def test_worker_settings():
    conf = celery_app.conf
    embedded = conf.broker_url.startswith("filesystem")
    assert conf.task_acks_late and conf.worker_prefetch_multiplier == (4 if embedded else 2)
    # What a task prints (consolemail:// mails) is output, not WARNINGs of celery.redirected.
    assert conf.worker_redirect_stdouts is False
    assert conf.get("CELERY_DB_REUSE_MAX") == 1000
    assert conf.task_routes["backend.tasks.jobs.expire_overdue_tasks"] == {"queue": "maintenance"}


def test_a_result_that_cannot_be_stored_fails_the_task(user, monkeypatch):
    # A 5,000-digit integer is past what Python turns into JSON text.
    kind = dataclasses.replace(types.get("sum"), handler=lambda data, ctx: {"result": 10**5000})
    monkeypatch.setitem(types_base._REGISTRY, "sum", kind)
    task = TaskFactory(owner=user)
    assert jobs.run_task(str(task.pk)) == "failed"
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED and task.error.startswith("ValueError: ")


@pytest.mark.parametrize("instant", [True, False])
def test_a_result_holding_nul_or_a_lone_surrogate_is_stored_with_replacement_characters(
    user, monkeypatch, client_for, instant
):
    """What a job reads from the outside world (a CSV's header, a server's answer) may
    hold a NUL, which PostgreSQL stores in no text or jsonb, or a lone surrogate, which
    nothing encodes: each becomes U+FFFD, keys included, on every database, and the task
    completes. Before, PostgreSQL failed the run with a DataError, and SQLite stored it and
    then answered 500 for every list holding the task."""
    result = {"a\x00b": ["x\ud800y", {"k": "\udc00"}], "pair": "\ud83d\ude00", "n": 1}
    kind = dataclasses.replace(types.get("sum"), handler=lambda data, ctx: result, instant=instant)
    monkeypatch.setitem(types_base._REGISTRY, "sum", kind)
    task = TaskFactory(owner=user)
    assert jobs.run_task(str(task.pk), "sum", task.input_data) == "completed"
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED
    assert task.result == {"a\ufffdb": ["x\ufffdy", {"k": "\ufffd"}], "pair": "😀", "n": 1}
    assert client_for(user).get("/api/tasks/").status_code == 200


def test_an_error_holding_nul_fails_the_task_with_it_replaced(user, monkeypatch):
    def handler(data, ctx):
        raise ValueError("bad \x00 byte in \udc80 header")

    kind = dataclasses.replace(types.get("sum"), handler=handler)
    monkeypatch.setitem(types_base._REGISTRY, "sum", kind)
    task = TaskFactory(owner=user)
    assert jobs.run_task(str(task.pk), "sum", task.input_data) == "failed"
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert task.error == "ValueError: bad \ufffd byte in \ufffd header"


@pytest.mark.django_db(transaction=True)
def test_broken_database_connections_are_dropped_around_each_task(monkeypatch):
    from celery.signals import task_prerun

    connection.ensure_connection()
    monkeypatch.setattr(connection, "errors_occurred", True)
    monkeypatch.setattr(connection, "is_usable", lambda: False)
    task_prerun.send(sender=jobs.run_task, task_id="t", task=jobs.run_task, args=(), kwargs={})
    assert connection.connection is None
    monkeypatch.undo()
    connection.ensure_connection()  # and the next query simply opens a new one
    assert connection.is_usable()


def _as_instant(monkeypatch, instant: bool) -> None:
    """``sum`` as an instant type (as it is) or as one whose runs claim the task first."""
    kind = dataclasses.replace(types.get("sum"), instant=instant)
    monkeypatch.setitem(types_base._REGISTRY, "sum", kind)


class statements(CaptureQueriesContext):
    """The statements a run sends that read or write. On SQLite the outcome's UPDATE, which
    hands back the owner's settings, and the INSERT of the notifications they call for share
    a transaction of their own (a savepoint inside the test's): its BEGIN or SAVEPOINT and
    RELEASE are not counted. PostgreSQL sends nothing else."""

    def __init__(self):
        super().__init__(connection)

    @property
    def work(self) -> list[str]:
        control = ("BEGIN", "SAVEPOINT", "RELEASE SAVEPOINT")
        if connection.vendor == "postgresql":
            return [q["sql"] for q in self.captured_queries]
        return [q["sql"] for q in self.captured_queries if not q["sql"].startswith(control)]


@pytest.mark.parametrize("instant", [True, False])
def test_a_run_costs_two_statements(user, monkeypatch, instant):
    """An instant type: a read (one SELECT) and the outcome (one guarded UPDATE from
    pending); any other: the claim (one UPDATE … RETURNING) and the outcome (one guarded
    UPDATE from running). Nothing is re-read. The owner wants no notification of a
    completion (the default: failures only), which the outcome's statement reads (on
    PostgreSQL it would also write them: backend/notifications/tests/test_outbox.py)."""
    _as_instant(monkeypatch, instant)
    assert user.notify_email == ["task.failed"] and not user.webhook_url
    task = TaskFactory(owner=user, input_data={"numbers": [1, 2]})
    with statements() as sent_statements:
        assert jobs.run_task(str(task.pk), "sum") == "completed"
    assert len(sent_statements.work) == 2, sent_statements.work
    task.refresh_from_db()
    assert task.result == {"result": 3} and task.attempts == 1
    assert task.started_at <= task.completed_at and task.heartbeat_at == task.started_at


def test_a_message_naming_no_type_is_read_first(user, monkeypatch):
    """Run messages name the task's type; one that does not (sent by an older release)
    costs a read more for a type that is not instant, and runs it all the same."""
    _as_instant(monkeypatch, False)
    task = TaskFactory(owner=user, input_data={"numbers": [1, 2]})
    with statements() as sent_statements:
        assert jobs.run_task(str(task.pk)) == "completed"
    assert len(sent_statements.work) == 3, sent_statements.work
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and task.attempts == 1


def test_an_instant_run_leaves_the_task_pending_until_its_outcome(user, monkeypatch):
    """Read, not claimed: while the handler runs the task is still pending (a worker dying
    there leaves it to be sent again, nothing to rescue); the outcome starts and ends it."""
    seen = []

    def handler(data, ctx):
        seen.append(Task.objects.values_list("status", "attempts").get(pk=task.pk))
        return {"result": 1}

    kind = dataclasses.replace(types.get("sum"), handler=handler)
    monkeypatch.setitem(types_base._REGISTRY, "sum", kind)
    task = TaskFactory(owner=user, attempts=1)
    assert jobs.run_task(str(task.pk), "sum") == "completed"
    assert seen == [(TaskStatus.PENDING, 1)]
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and task.attempts == 2


@pytest.mark.parametrize(
    ("carried", "outcomes"),
    [
        ((), ("discarded",)),  # read first
        (({"numbers": [1]},), ("skipped", "discarded")),  # from the message, or read (SQLite)
    ],
)
def test_an_instant_task_cancelled_during_its_run_stays_cancelled(
    user, monkeypatch, carried, outcomes
):
    def handler(data, ctx):
        services.task_cancel(task=Task.objects.get(pk=task.pk), actor=user)
        return {"result": 1}

    kind = dataclasses.replace(types.get("sum"), handler=handler)
    monkeypatch.setitem(types_base._REGISTRY, "sum", kind)
    task = TaskFactory(owner=user)
    assert jobs.run_task(str(task.pk), "sum", *carried).startswith(outcomes)
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED and task.result is None and task.attempts == 0


def test_two_reads_of_an_instant_task_record_one_outcome(user):
    """Two workers given the same task (a duplicate message) both read it pending; the
    first outcome wins, the second finds it no longer pending."""
    task = TaskFactory(owner=user, input_data={"numbers": [2]})
    first, second = services.task_read(task_id=task.pk), services.task_read(task_id=task.pk)
    assert services.task_finish(task=first, result={"result": 2})
    assert not services.task_fail(task=second, error="late")
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and task.attempts == 1 and task.error is None
    assert services.task_read(task_id=task.pk) is None
    assert services.task_read(task_id="not-a-uuid") is None


def test_an_overdue_task_is_not_read(user):
    from datetime import timedelta

    from django.utils import timezone

    task = TaskFactory(owner=user, deadline=timezone.now() - timedelta(seconds=1))
    assert services.task_read(task_id=task.pk) is None
    assert jobs.run_task(str(task.pk), "sum").startswith("skipped")


def test_an_instant_type_is_a_short_one_never_tried_again():
    for unfit in (
        {"handler": None},
        {"queue": types.QUEUE_LONG},
        {"transient_errors": (types.TransientError,)},
    ):
        with pytest.raises(ValueError, match="instant"):
            dataclasses.replace(types.get("sum"), **unfit)


@pytest.mark.django_db(transaction=True)  # autocommit, as on a worker
@pytest.mark.parametrize("instant", [True, False])
@pytest.mark.parametrize("synchronous", [False, True])
def test_a_runs_commits_are_relaxed_on_postgresql_only_for_its_own_statements(
    user, settings, monkeypatch, synchronous, instant
):
    """On PostgreSQL the claim and the outcome commit with synchronous_commit off, for their
    own transaction only (set_config in a WITH clause they join), unless
    RUN_SYNCHRONOUS_COMMIT; the session keeps its own setting for whatever else the worker
    writes. An instant type's read writes nothing, so has nothing to relax."""

    from backend.tasks.services import execution

    _as_instant(monkeypatch, instant)
    settings.RUN_SYNCHRONOUS_COMMIT = synchronous
    task = TaskFactory(owner=user, input_data={"numbers": [1, 2]})
    with CaptureQueriesContext(connection) as captured:
        assert jobs.run_task(str(task.pk), "sum") == "completed"
    statements = [q["sql"] for q in captured.captured_queries if "tasks_task" in q["sql"]]
    assert len(statements) == 2
    relaxed = connection.vendor == "postgresql" and not synchronous
    assert [execution.RELAXED in sql for sql in statements] == [relaxed and not instant, relaxed]
    assert statements[0].startswith("SELECT") == instant
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # What the clause does: the setting is off within the statement's transaction...
            cursor.execute(
                f"{execution.RELAXED} SELECT current_setting('synchronous_commit') FROM relaxed"
            )
            assert cursor.fetchone()[0] == "off"
            # ...and the session's own setting is back once it has committed.
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and task.result == {"result": 3}


def test_claim_hands_back_what_the_run_needs(user):
    task = TaskFactory(owner=user, input_data={"numbers": [4]}, attempts=1)
    claimed = services.task_claim(task_id=str(task.pk))
    assert claimed.pk == task.pk and claimed.owner_id == user.pk
    assert claimed.input_data == {"numbers": [4]} and claimed.attempts == 2
    assert services.task_claim(task_id=str(task.pk)) is None  # no longer pending
    assert services.task_claim(task_id="not-a-uuid") is None


def test_a_run_the_database_failed_is_asked_again_not_dropped(user, monkeypatch):
    """The run's message was acknowledged with the error and the task waited for the
    dispatcher (TASK_REDISPATCH_AFTER, 5 minutes)."""
    from django.db import OperationalError

    from backend.tasks import runner

    task = TaskFactory(owner=user, task_type="sum", input_data={"numbers": [1, 2]})
    fails_once = failing_first(
        runner.execute, OperationalError("terminating connection due to administrator command")
    )
    monkeypatch.setattr(runner, "execute", fails_once)
    outcome = jobs.run_task.apply(args=[str(task.pk)]).get()
    assert fails_once.calls == 2 and outcome == "completed"
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and task.result == {"result": 3}


def test_a_run_the_database_keeps_failing_gives_up_after_a_few_tries(user, monkeypatch):
    from django.db import OperationalError

    from backend.tasks import runner

    calls = []

    def always(*args):
        calls.append(args)
        raise OperationalError("the database is down")

    monkeypatch.setattr(runner, "execute", always)
    with pytest.raises(OperationalError):
        jobs.run_task.apply(args=["any"]).get()
    assert len(calls) == jobs.DATABASE_RETRIES + 1


def test_the_connection_is_checked_every_so_many_tasks(monkeypatch):
    from celery.signals import task_prerun

    import backend.celery as celery_module

    checks = []
    monkeypatch.setattr("django.db.close_old_connections", lambda: checks.append(1))
    monkeypatch.setattr(celery_module._ConnectionCheck, "runs", 0)
    for _ in range(celery_module._ConnectionCheck.every * 2):
        task_prerun.send(sender=jobs.run_task, task_id="t", task=jobs.run_task, args=(), kwargs={})
    assert len(checks) == 2


@pytest.mark.django_db(transaction=True)
def test_an_urgent_task_overtakes_the_low_ones_waiting(user):
    """Priorities on the configured broker: Redis priority steps, or the embedded broker's
    file order. Five low tasks are waiting; an urgent one sent after them is handed out first,
    then a normal one, then the low ones in the order they came."""
    from .processes import purge_filesystem_broker

    purge_filesystem_broker()
    low = [TaskFactory(owner=user, priority="low") for _ in range(5)]
    urgent = TaskFactory(owner=user, priority="urgent")
    normal = TaskFactory(owner=user, priority="normal")
    published = queue.publish([queue.job_of(t) for t in (*low, urgent, normal)])
    assert len(published) == 7
    order = []
    with celery_app.connection_for_write() as conn:
        channel = conn.default_channel
        for _ in range(7):
            message = channel.basic_get("tasks", no_ack=True)
            order.append(ast.literal_eval(message.headers["argsrepr"])[0])
    assert order == [str(t.pk) for t in (urgent, normal, *low)]


def test_a_broker_connection_logs_no_warning(caplog):
    """The worker's banner and its 'Connected to' line describe the connection."""
    with caplog.at_level("WARNING"), celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        connection.info()
        connection.as_uri()
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []


def test_many_messages_go_in_batches_and_all_arrive(user, monkeypatch):
    """Sends of many messages (the dispatcher, a sweep's notifications) go a batch at a time
    (one pipeline each on Redis); every message arrives, in order within its priority."""
    from .processes import purge_filesystem_broker

    purge_filesystem_broker()
    monkeypatch.setattr(queue, "BATCH", 3)
    tasks = [TaskFactory(owner=user) for _ in range(7)]
    assert queue.publish([queue.job_of(t) for t in tasks]) == [t.pk for t in tasks]
    received = []
    with celery_app.connection_for_write() as conn:
        channel = conn.default_channel
        while (message := channel.basic_get("tasks", no_ack=True)) is not None:
            received.append(ast.literal_eval(message.headers["argsrepr"])[0])
    assert received == [str(t.pk) for t in tasks]


# --- a run of an instant type from the input its message carries ---------------------------


def test_an_instant_types_message_carries_its_input_when_small():
    def arguments(task_type, input_data):
        job = queue.Job("id", task_type, input_data, 1)
        return queue.run_arguments(job, types.get(task_type))

    assert arguments("sum", {"numbers": [1, 2]}) == ["id", "sum", {"numbers": [1, 2]}]
    small = {"data": "x" * (queue.INLINE_INPUT_BYTES - 20)}
    assert arguments("reverse", small) == ["id", "reverse", small]
    large = {"data": "x" * queue.INLINE_INPUT_BYTES}
    assert arguments("reverse", large) == ["id", "reverse"]  # the worker reads it instead
    assert arguments("countdown", {"seconds": 1}) == ["id", "countdown"]  # not instant


def test_a_run_from_its_messages_input_is_one_statement_on_postgresql(user):
    """The handler runs on the message's input; one guarded statement from pending then
    starts and ends the task (and would write its notifications). SQLite reads it first."""
    task = TaskFactory(owner=user, input_data={"numbers": [1, 2]})
    with statements() as sent_statements:
        assert jobs.run_task(str(task.pk), "sum", {"numbers": [1, 2]}) == "completed"
    expected = 1 if connection.vendor == "postgresql" else 2
    assert len(sent_statements.work) == expected, sent_statements.work
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and task.result == {"result": 3}
    assert task.attempts == 1 and task.progress == 100 and task.error is None
    assert task.started_at <= task.completed_at and task.heartbeat_at == task.started_at
    # A duplicate message: the task is no longer pending, nothing changes.
    assert jobs.run_task(str(task.pk), "sum", {"numbers": [1, 2]}).startswith("skipped")
    task.refresh_from_db()
    assert task.attempts == 1 and task.result == {"result": 3}


def test_a_run_from_its_messages_input_leaves_alone_what_is_no_longer_to_run(user):
    from datetime import timedelta

    from django.utils import timezone

    cancelled = TaskFactory(owner=user, status=TaskStatus.CANCELLED)
    overdue = TaskFactory(owner=user, deadline=timezone.now() - timedelta(seconds=1))
    tasks = [cancelled, overdue]
    if connection.vendor == "postgresql":  # SQLite reads the task: its own type runs
        tasks.append(TaskFactory(owner=user, task_type="reverse", input_data={"data": "ab"}))
    for task in tasks:
        assert jobs.run_task(str(task.pk), "sum", {"numbers": [1]}).startswith("skipped")
        before = task.status
        task.refresh_from_db()
        assert task.status == before and task.result is None and task.attempts == 0
    for missing in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        assert jobs.run_task(missing, "sum", {"numbers": [1]}).startswith("skipped")


@pytest.mark.django_db(transaction=True)  # autocommit, as on a worker
def test_a_failed_run_from_its_messages_input_writes_and_sends_its_notification(
    user,
    monkeypatch,
    sent,  # noqa: F811
):
    """The owner is mailed task.failed (the default): the run's one statement also writes
    the notification (as the sweeps do), sent once committed."""
    from backend.notifications.models import Notification

    def handler(data, ctx):
        raise ValueError("no good")

    kind = dataclasses.replace(types.get("sum"), handler=handler)
    monkeypatch.setitem(types_base._REGISTRY, "sum", kind)
    assert user.email and user.notify_email == ["task.failed"]
    task = TaskFactory(owner=user)
    assert jobs.run_task(str(task.pk), "sum", {"numbers": [1]}) == "failed"
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED and task.error == "ValueError: no good"
    assert task.attempts == 1 and task.completed_at and task.started_at
    (notification,) = Notification.objects.all()
    assert (notification.task_id, notification.event, notification.channel) == (
        task.pk,
        "task.failed",
        "email",
    )
    assert notification.target == user.email and sent == [str(notification.pk)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("synchronous", [False, True])
def test_a_run_from_its_messages_input_commits_relaxed_on_postgresql(user, settings, synchronous):

    from backend.tasks.services import execution

    settings.RUN_SYNCHRONOUS_COMMIT = synchronous
    task = TaskFactory(owner=user, input_data={"numbers": [4]})
    with CaptureQueriesContext(connection) as captured:
        assert jobs.run_task(str(task.pk), "sum", {"numbers": [4]}) == "completed"
    statements = [q["sql"] for q in captured.captured_queries if "tasks_task" in q["sql"]]
    if connection.vendor != "postgresql":
        assert [sql.startswith("SELECT") for sql in statements] == [True, False]
        return
    (statement,) = statements
    assert (execution.RELAXED in statement) == (not synchronous)
    with connection.cursor() as cursor:  # the session's own setting is untouched
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


def test_a_run_past_its_deadline_fails_at_its_next_heartbeat(user, monkeypatch):
    """A running countdown past its deadline finished "completed" when no expiry sweep had
    run in between (beat stopped, or between two sweeps): its heartbeat is now refused, and
    the task fails as the sweep fails it."""
    from datetime import timedelta

    from django.utils import timezone

    task = TaskFactory(
        owner=user,
        task_type="countdown",
        input_data={"seconds": 2},
        deadline=timezone.now() + timedelta(minutes=5),
    )
    countdown = types.get("countdown")

    def deadline_passes_once_running(data, ctx):
        # Not a deadline a moment away: a loaded machine claimed the task after it, and the
        # refused claim is another path than this test's.
        Task.objects.filter(pk=task.pk).update(deadline=timezone.now() - timedelta(seconds=1))
        return countdown.handler(data, ctx)

    kind = dataclasses.replace(countdown, handler=deadline_passes_once_running)
    monkeypatch.setitem(types_base._REGISTRY, "countdown", kind)
    assert jobs.run_task(str(task.pk)) == "failed: deadline exceeded"
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED and task.error == services.DEADLINE_EXCEEDED
    assert task.result is None


def test_a_result_that_comes_after_the_deadline_is_not_recorded(user, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    task = TaskFactory(
        owner=user,
        task_type="reverse",
        input_data={"data": "abc"},
        deadline=timezone.now() + timedelta(minutes=5),
    )

    def slow_reverse(data, ctx):
        Task.objects.filter(pk=task.pk).update(deadline=timezone.now() - timedelta(seconds=1))
        return {"result": "cba"}

    kind = dataclasses.replace(types.get("reverse"), handler=slow_reverse)
    monkeypatch.setitem(types_base._REGISTRY, "reverse", kind)
    assert jobs.run_task(str(task.pk), "", None).startswith("failed: deadline exceeded")
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED and task.error == services.DEADLINE_EXCEEDED


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_the_database_fails_does_not_end_the_run(user, monkeypatch):
    """A PostgreSQL restart under a running countdown failed its heartbeat; the run took
    that for the handler's failure, the task was left running until the rescue sweep, and
    three restarts failed it as "the worker running this task was lost"."""
    from django.db import OperationalError

    fails_first = failing_first(
        services.task_report_progress,
        OperationalError("terminating connection due to administrator command"),
    )
    monkeypatch.setattr(services, "task_report_progress", fails_first)
    task = TaskFactory(owner=user, task_type="countdown", input_data={"seconds": 2})
    assert jobs.run_task(str(task.pk)) == "completed"
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and task.attempts == 1 and fails_first.calls == 2


@pytest.mark.django_db(transaction=True)
def test_an_outcome_the_database_fails_is_written_again(user, monkeypatch):
    from django.db import OperationalError

    from backend.tasks import runner

    monkeypatch.setattr(runner, "RECORD_PAUSES", (0, 0, 0))
    fails_twice = failing_first(
        services.task_finish, OperationalError("the database system is starting up"), times=2
    )
    monkeypatch.setattr(services, "task_finish", fails_twice)
    task = TaskFactory(owner=user, task_type="countdown", input_data={"seconds": 1})
    assert jobs.run_task(str(task.pk)) == "completed"
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and task.attempts == 1


@pytest.mark.django_db(transaction=True)
def test_an_outcome_the_database_keeps_failing_leaves_the_run_to_the_rescue(user, monkeypatch):
    """Not the handler's failure: the task is not failed with the database's error."""
    from django.db import OperationalError

    from backend.tasks import runner

    monkeypatch.setattr(runner, "RECORD_PAUSES", (0,))

    def always(**kwargs):
        raise OperationalError("the database is down")

    monkeypatch.setattr(services, "task_finish", always)
    task = TaskFactory(owner=user, task_type="countdown", input_data={"seconds": 1})
    with pytest.raises(OperationalError):
        jobs.run_task(str(task.pk))
    task.refresh_from_db()
    assert task.status == TaskStatus.RUNNING and task.error is None


@pytest.mark.django_db(transaction=True)
def test_a_time_limit_while_waiting_to_write_the_outcome_still_writes_it(user, monkeypatch):
    """The waits between writes count against the run's time limit: the soft limit fired
    in one and the task was failed "time limit exceeded", its result thrown away."""
    from django.db import OperationalError

    from backend.common import recording

    fails_until_the_last_try = failing_first(
        services.task_finish, OperationalError("the database system is starting up")
    )

    def time_is_up(seconds):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(services, "task_finish", fails_until_the_last_try)
    monkeypatch.setattr(recording.time, "sleep", time_is_up)
    task = TaskFactory(owner=user, task_type="reverse", input_data={"data": "abc"})
    assert jobs.run_task(str(task.pk)) == "completed"
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and task.error is None


@pytest.mark.django_db(transaction=True)
def test_a_time_limit_during_the_outcomes_write_still_writes_it(user, monkeypatch):
    """A database that hangs: the soft limit fired in the middle of the outcome's statement,
    the task was failed "time limit exceeded" on that connection (mid-statement: "another
    command is already in progress"), the hard limit killed the run, and it ran again."""
    from backend.common import recording

    monkeypatch.setattr(recording.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(
        services, "task_finish", failing_first(services.task_finish, SoftTimeLimitExceeded(), 2)
    )
    task = TaskFactory(owner=user, task_type="reverse", input_data={"data": "abc"})
    assert jobs.run_task(str(task.pk)) == "completed"
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and task.error is None
    assert task.result == {"result": "cba"}


def test_the_hard_limit_leaves_a_run_the_time_to_write_its_outcome(monkeypatch):
    """It came 5 s after the soft one: a run that finished as the database went away for
    half a minute was killed while it waited to write its outcome, and was run again."""
    from types import SimpleNamespace

    from backend.common import recording

    assert sum(recording.RECORD_PAUSES) < recording.RECORD_BUDGET
    published = []

    class Producer:
        channel = object()

        def publish(self, body, **kwargs):
            published.append(kwargs["headers"])

    declared = SimpleNamespace(exchange=SimpleNamespace(delivery_mode=2))
    monkeypatch.setattr(queue, "_declared", lambda channel, name: declared)
    queue._send(Producer(), "backend.tasks.jobs.run_task", ["x"], queue="tasks", limit=30)
    assert published[0]["timelimit"] == [30 + recording.RECORD_BUDGET, 30]


@pytest.mark.django_db(transaction=True)
def test_a_handlers_own_query_the_database_fails_is_tried_again_later(user, monkeypatch):
    """A report or a data job whose query met a database restart failed with the database's
    error; it is passing, as a type's transient errors are: the task is scheduled again
    with backoff while attempts remain, and then completes."""
    from datetime import timedelta

    from django.db import OperationalError
    from django.utils import timezone

    monkeypatch.setattr(services.queue, "publish", lambda jobs: [])  # no broker needed here
    queries_during_a_restart = failing_first(
        lambda data, ctx: {"result": Task.objects.filter(pk=task.pk).count()},
        OperationalError("terminating connection due to administrator command"),
    )

    kind = dataclasses.replace(types.get("countdown"), handler=queries_during_a_restart)
    monkeypatch.setitem(types_base._REGISTRY, "countdown", kind)
    task = TaskFactory(owner=user, task_type="countdown", input_data={"seconds": 1})
    assert jobs.run_task(str(task.pk)).startswith("retrying in ")
    task.refresh_from_db()
    assert task.status == TaskStatus.SCHEDULED and task.attempts == 1
    assert task.error == "OperationalError: terminating connection due to administrator command"
    Task.objects.filter(pk=task.pk).update(run_at=timezone.now() - timedelta(seconds=1))
    assert services.tasks_dispatch()["released"] == 1
    assert jobs.run_task(str(task.pk)) == "completed"
    task.refresh_from_db()
    assert (
        task.status == TaskStatus.COMPLETED and task.attempts == 2 and task.result == {"result": 1}
    )


@pytest.mark.django_db(transaction=True)
def test_a_handlers_database_error_fails_the_task_once_attempts_are_spent(user, monkeypatch):
    from django.db import InterfaceError

    def connection_closed(data, ctx):
        raise InterfaceError("connection already closed")

    kind = dataclasses.replace(types.get("countdown"), handler=connection_closed)
    monkeypatch.setitem(types_base._REGISTRY, "countdown", kind)
    task = TaskFactory(owner=user, task_type="countdown", input_data={"seconds": 1}, max_attempts=1)
    assert jobs.run_task(str(task.pk)) == "failed"
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED and task.attempts == 1
    assert task.error == "InterfaceError: connection already closed (gave up after 1 attempts)"

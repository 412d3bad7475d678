"""The rules of §5 through the services: the limit, guarded transitions, the sweeps."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backend.common.errors import Conflict, DomainError, NotFound, PermissionDenied
from backend.notifications.models import Notification
from backend.tasks import services
from backend.tasks.models import Task, TaskStatus
from backend.tasks.services import lifecycle
from backend.users.tests.factories import UserFactory

from .factories import TaskFactory

pytestmark = pytest.mark.django_db


def create(owner, task_type="sum", input_data=None, **kwargs) -> Task:
    if input_data is None:
        input_data = {"numbers": [1]} if task_type == "sum" else {}
    return services.task_create(owner=owner, task_type=task_type, input_data=input_data, **kwargs)


# --- create -----------------------------------------------------------------------------


def test_create_assigns_to_the_owner_and_queues_on_commit(user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        task = create(user)
    assert task.assignee == user and task.status == TaskStatus.PENDING
    assert task.name == "sum" and task.max_attempts == 3
    assert len(callbacks) == 1  # the enqueue waits for the commit


def test_manual_tasks_are_not_queued(user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        task = create(user, task_type="manual", assignee=None)
    assert task.assignee is None and task.status == TaskStatus.PENDING
    assert callbacks == []


def test_worker_task_needs_an_assignee(user):
    with pytest.raises(DomainError) as error:
        create(user, assignee=None)
    assert error.value.code == "assignee_required"
    assert not Task.objects.exists()


def test_future_run_at_schedules(user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        task = create(user, run_at=timezone.now() + timedelta(minutes=5))
    assert task.status == TaskStatus.SCHEDULED and callbacks == []


@pytest.mark.parametrize(
    ("offsets", "code"),
    [
        ({"deadline": timedelta(seconds=-1)}, "deadline_in_past"),
        (
            {"deadline": timedelta(minutes=1), "run_at": timedelta(minutes=2)},
            "run_at_after_deadline",
        ),
    ],
)
def test_create_refuses_impossible_times(user, offsets, code):
    # Times from the moment the test runs, not from when the suite was collected.
    now = timezone.now()
    with pytest.raises(DomainError) as error:
        create(user, **{name: now + offset for name, offset in offsets.items()})
    assert error.value.code == code


def test_manual_task_cannot_be_scheduled(user):
    with pytest.raises(DomainError) as error:
        create(user, task_type="manual", run_at=timezone.now() + timedelta(minutes=1))
    assert error.value.code == "run_at_not_allowed"


def test_inactive_assignee_is_refused(user):
    gone = UserFactory(is_active=False)
    with pytest.raises(DomainError) as error:
        create(user, "manual", assignee=gone)
    assert error.value.code == "assignee_inactive"


# --- the limit --------------------------------------------------------------------------


def test_sixth_active_task_is_refused(user, settings):
    for _ in range(settings.MAX_ACTIVE_TASKS):
        create(user)
    with pytest.raises(Conflict) as error:
        create(user)
    assert error.value.code == "active_task_limit"
    assert Task.objects.filter(assignee=user).count() == 5


def test_a_create_counts_in_its_insert_and_a_refused_one_writes_nothing(user, settings):
    settings.MAX_ACTIVE_TASKS = 1
    with CaptureQueriesContext(connection) as made:
        create(user)
    with CaptureQueriesContext(connection) as refused, pytest.raises(Conflict) as error:
        create(user)
    assert error.value.code == "active_task_limit"
    assert Task.objects.filter(assignee=user).count() == 1
    for queries in (made, refused):
        statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
        # One INSERT that checks the limit: no statement of its own for the lock or the
        # count. PostgreSQL: the function that locks the assignee's row, then counts;
        # SQLite: the count (its transaction already holds the write lock).
        assert len(statements) == 1 and statements[0].startswith("INSERT")
        if connection.vendor == "postgresql":
            assert "tasks_take_slot(" in statements[0]
        else:
            assert "COUNT(*)" in statements[0]


def _record_statements(log):
    def record(execute, sql, params, many, context):
        log.append((sql.split()[0], connection.get_autocommit()))
        return execute(sql, params, many, context)

    return connection.execute_wrapper(record)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite needs its transaction")
@pytest.mark.django_db(transaction=True)
def test_a_create_that_writes_only_its_row_is_one_statement_in_autocommit(settings):
    owner = UserFactory()
    settings.MAX_ACTIVE_TASKS = 1
    statements = []
    with _record_statements(statements):
        create(owner)
        with pytest.raises(Conflict):
            create(owner)
    # No BEGIN or COMMIT round trips: the INSERT commits itself.
    assert statements == [("INSERT", True), ("INSERT", True)]
    assert Task.objects.filter(assignee=owner).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_create_with_notifications_is_one_transaction_and_all_or_nothing(monkeypatch):
    owner = UserFactory(webhook_url="https://hooks.example.com/in")
    statements = []
    with _record_statements(statements):
        task = create(owner, callback_url="https://callbacks.example.com/done")
    inserts = [autocommit for verb, autocommit in statements if verb == "INSERT"]
    assert len(inserts) == 3 and not any(inserts)  # the task, its callback, the notifications
    assert Notification.objects.filter(task_id=task.pk).count() == 2

    def refuse(notifications):
        raise RuntimeError("the notifications could not be written")

    monkeypatch.setattr(lifecycle.notifications, "notifications_create", refuse)
    with pytest.raises(RuntimeError):
        create(owner, callback_url="https://callbacks.example.com/done")
    assert Task.objects.filter(owner=owner).count() == 1  # the second row was rolled back


def test_limit_counts_scheduled_pending_and_running_only(user):
    TaskFactory(assignee=user, owner=user, status=TaskStatus.SCHEDULED)
    TaskFactory(assignee=user, owner=user, status=TaskStatus.RUNNING)
    TaskFactory(assignee=user, owner=user, status=TaskStatus.PENDING)
    for status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
        TaskFactory.create_batch(3, assignee=user, owner=user, status=status)
    create(user)
    create(user)
    with pytest.raises(Conflict):
        create(user)


def test_limit_is_per_assignee_not_per_owner(user, other_user):
    for _ in range(5):
        create(user, "manual", assignee=other_user)
    with pytest.raises(Conflict):
        create(user, "manual", assignee=other_user)
    create(user)  # the owner's own count is untouched


def test_limit_follows_the_setting(user, settings):
    settings.MAX_ACTIVE_TASKS = 1
    create(user)
    with pytest.raises(Conflict):
        create(user)


def test_assign_respects_the_limit(user, other_user):
    TaskFactory.create_batch(5, assignee=other_user, owner=other_user)
    task = create(user, "manual")
    with pytest.raises(Conflict) as error:
        services.task_assign(task=task, actor=user, assignee=other_user)
    assert error.value.code == "active_task_limit"
    task.refresh_from_db()
    assert task.assignee == user


def test_retry_respects_the_limit(user):
    failed = TaskFactory(owner=user, status=TaskStatus.FAILED)
    TaskFactory.create_batch(5, owner=user)
    with pytest.raises(Conflict) as error:
        services.task_retry(task=failed, actor=user)
    assert error.value.code == "active_task_limit"
    failed.refresh_from_db()
    assert failed.status == TaskStatus.FAILED


# --- transitions ------------------------------------------------------------------------


def test_cancel_active_tasks_only(user):
    task = TaskFactory(owner=user, status=TaskStatus.RUNNING)
    services.task_cancel(task=task, actor=user)
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED and task.completed_at is not None
    with pytest.raises(Conflict) as error:
        services.task_cancel(task=task, actor=user)
    assert error.value.code == "invalid_status"


def test_a_cancel_never_ends_a_task_before_its_claim_started_it(user):
    """The cancel read the clock, a worker's claim committed (its start a moment later),
    then the cancel's update matched the running task: cancelled before it started."""
    task = TaskFactory(owner=user, status=TaskStatus.PENDING)
    claimed_at = timezone.now() + timedelta(seconds=1)  # the claim's clock, after the cancel's
    Task.objects.filter(pk=task.pk).update(status=TaskStatus.RUNNING, started_at=claimed_at)
    services.task_cancel(task=task, actor=user)  # ``task`` still says pending
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED
    assert task.completed_at == task.started_at == claimed_at


def test_a_complete_keeps_the_start_committed_meanwhile(user, other_user):
    """The complete wrote back the start it had read (none: its own time), over the start
    the assignee's other request committed: the task's start moved, its run time 0."""
    task = TaskFactory(owner=user, assignee=other_user, task_type="manual", input_data={})
    started_at = timezone.now() + timedelta(seconds=1)
    Task.objects.filter(pk=task.pk).update(status=TaskStatus.RUNNING, started_at=started_at)
    services.task_complete(task=task, actor=other_user)  # ``task`` still says pending
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED
    assert task.started_at == started_at and task.completed_at >= started_at


def test_cancel_by_assignee_who_does_not_own_is_refused(user, other_user):
    task = TaskFactory(owner=user, assignee=other_user)
    with pytest.raises(PermissionDenied):
        services.task_cancel(task=task, actor=other_user)


def test_a_stale_object_cannot_overwrite_a_newer_status(user):
    task = TaskFactory(owner=user, status=TaskStatus.PENDING)
    Task.objects.filter(pk=task.pk).update(status=TaskStatus.COMPLETED)
    with pytest.raises(Conflict):
        services.task_cancel(task=task, actor=user)  # ``task`` still says pending
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED


def test_retry_resets_the_run(user, django_capture_on_commit_callbacks):
    task = TaskFactory(
        owner=user, status=TaskStatus.FAILED, error="boom", progress=40, attempts=3, max_attempts=3
    )
    with django_capture_on_commit_callbacks() as callbacks:
        services.task_retry(task=task, actor=user)
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING
    assert (task.error, task.result, task.progress, task.completed_at) == (None, None, 0, None)
    assert task.max_attempts == 6 and len(callbacks) == 1


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.COMPLETED])
def test_retry_needs_a_failed_or_cancelled_task(user, status):
    task = TaskFactory(owner=user, status=status)
    with pytest.raises(Conflict):
        services.task_retry(task=task, actor=user)


def test_retry_refuses_manual_tasks_and_passed_deadlines(user):
    manual = TaskFactory(owner=user, task_type="manual", input_data={}, status=TaskStatus.CANCELLED)
    with pytest.raises(Conflict) as error:
        services.task_retry(task=manual, actor=user)
    assert error.value.code == "not_retryable"
    overdue = TaskFactory(
        owner=user, status=TaskStatus.FAILED, deadline=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(Conflict) as error:
        services.task_retry(task=overdue, actor=user)
    assert error.value.code == "deadline_passed"


def test_manual_start_and_complete(user, other_user, staff):
    task = create(user, task_type="manual", assignee=other_user)
    with pytest.raises(PermissionDenied):
        services.task_start(task=task, actor=user)
    task = services.task_start(task=task, actor=other_user)
    assert task.status == TaskStatus.RUNNING and task.started_at
    with pytest.raises(Conflict):
        services.task_start(task=task, actor=other_user)
    with pytest.raises(PermissionDenied):
        services.task_complete(task=task, actor=user)
    task = services.task_complete(task=task, actor=other_user, result={"notes": "done"})
    assert task.status == TaskStatus.COMPLETED and task.result == {"notes": "done"}
    assert task.progress == 100 and task.completed_at
    with pytest.raises(Conflict):
        services.task_complete(task=task, actor=staff)


def test_a_start_read_before_a_reassignment_loses_to_it(user, other_user):
    """Bob read the task as his; Ann gave it to Cat before Bob's start committed (what
    happens when the two requests race): Bob's start is a 409, and the task stays Cat's,
    pending."""
    cat = UserFactory()
    seen_by_bob = create(user, task_type="manual", assignee=other_user)
    services.task_assign(task=Task.objects.get(pk=seen_by_bob.pk), actor=user, assignee=cat)
    with pytest.raises(Conflict) as error:
        services.task_start(task=seen_by_bob, actor=other_user)
    assert error.value.code == "assignee_changed"
    task = Task.objects.get(pk=seen_by_bob.pk)
    assert task.status == TaskStatus.PENDING and task.assignee_id == cat.pk
    assert task.started_at is None


@pytest.mark.parametrize("completer", ["assignee", "staff"])
def test_a_complete_read_before_a_decline_loses_to_it(user, other_user, staff, completer):
    """The assignee handed the task back before a complete that read it as theirs
    committed: the complete is a 409, and the task stays pending and unassigned."""
    seen = create(user, task_type="manual", assignee=other_user)
    services.task_decline(task=Task.objects.get(pk=seen.pk), actor=other_user)
    actor = other_user if completer == "assignee" else staff
    with pytest.raises(Conflict) as error:
        services.task_complete(task=seen, actor=actor, result={"done": True})
    assert error.value.code == "assignee_changed"
    task = Task.objects.get(pk=seen.pk)
    assert task.status == TaskStatus.PENDING and task.assignee_id is None
    assert task.result is None


@pytest.mark.parametrize("action", ["start", "complete", "staff completes", "assign"])
def test_a_manual_task_past_its_deadline_is_not_started_completed_or_given(
    user, other_user, staff, action
):
    """Between its deadline and the next expiry sweep a manual task was started and
    completed (its late result recorded, the task `completed`), or given to someone,
    though a worker's late result is refused."""
    task = create(user, task_type="manual", assignee=other_user)
    Task.objects.filter(pk=task.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    task = Task.objects.get(pk=task.pk)
    with pytest.raises(Conflict) as error:
        if action == "start":
            services.task_start(task=task, actor=other_user)
        elif action == "assign":
            services.task_assign(task=task, actor=user, assignee=UserFactory())
        else:
            actor = other_user if action == "complete" else staff
            services.task_complete(task=task, actor=actor, result={"late": True})
    assert error.value.code == "deadline_passed"
    after = Task.objects.get(pk=task.pk)
    assert (after.status, after.assignee_id, after.result) == (
        TaskStatus.PENDING,
        other_user.pk,
        None,
    )
    # A start refused for its status says that, overdue or not.
    if action == "start":
        Task.objects.filter(pk=task.pk).update(status=TaskStatus.RUNNING)
        with pytest.raises(Conflict) as error:
            services.task_start(task=task, actor=other_user)
        assert error.value.code == "invalid_status"
        assert "this one is running" in str(error.value.detail)
        Task.objects.filter(pk=task.pk).update(status=TaskStatus.PENDING)
    # The sweep fails it as any other; a deadline moved first lets it go on.
    Task.objects.filter(pk=task.pk).update(deadline=timezone.now() + timedelta(hours=1))
    assert services.task_start(task=task, actor=other_user).status == TaskStatus.RUNNING


def test_a_refused_action_names_the_status_the_task_is_in_now(user, other_user):
    """The 409 named the status read before the guarded update: "Only a pending task can be
    started; this one is pending." for the loser of two starts, "…this one is pending" for a
    cancel that lost to the run's completion."""
    manual = create(user, task_type="manual", assignee=other_user)
    seen = Task.objects.get(pk=manual.pk)
    services.task_start(task=manual, actor=other_user)
    with pytest.raises(Conflict) as error:
        services.task_start(task=seen, actor=other_user)
    assert str(error.value.detail) == "Only a pending task can be started; this one is running."

    run = create(user)
    seen = Task.objects.get(pk=run.pk)
    Task.objects.filter(pk=run.pk).update(status=TaskStatus.COMPLETED)
    with pytest.raises(Conflict) as error:
        services.task_cancel(task=seen, actor=user)
    assert error.value.code == "invalid_status"
    assert str(error.value.detail) == "Only an active task can be cancelled; this one is completed."


def test_a_decline_read_before_a_reassignment_says_so(user, other_user):
    """Its assignee declined a task its owner had meanwhile given to someone else: 409
    "Only a pending task can be declined; this one is pending." (`invalid_status`)."""
    seen = create(user, task_type="manual", assignee=other_user)
    services.task_assign(task=Task.objects.get(pk=seen.pk), actor=user, assignee=UserFactory())
    with pytest.raises(Conflict) as error:
        services.task_decline(task=seen, actor=other_user)
    assert error.value.code == "assignee_changed"


def test_staff_can_complete_a_pending_manual_task(user, staff):
    task = create(user, task_type="manual")
    task = services.task_complete(task=task, actor=staff)
    assert task.status == TaskStatus.COMPLETED and task.started_at


def test_worker_tasks_are_not_started_by_hand(user):
    task = create(user)
    with pytest.raises(Conflict) as error:
        services.task_start(task=task, actor=user)
    assert error.value.code == "not_manual"


def test_assign_only_while_waiting(user, other_user):
    task = create(user, task_type="manual")
    task = services.task_assign(task=task, actor=user, assignee=other_user)
    assert task.assignee == other_user
    task = services.task_assign(task=task, actor=user, assignee=None)
    assert task.assignee is None
    running = TaskFactory(owner=user, status=TaskStatus.RUNNING)
    with pytest.raises(Conflict):
        services.task_assign(task=running, actor=user, assignee=other_user)
    with pytest.raises(DomainError):
        services.task_assign(task=create(user), actor=user, assignee=None)


def test_update_and_delete(user, other_user):
    task = TaskFactory(owner=user, assignee=other_user)
    task = services.task_update(task=task, actor=user, data={"priority": "urgent", "name": "x"})
    assert (task.priority, task.priority_rank, task.name) == ("urgent", 3, "x")
    with pytest.raises(PermissionDenied):
        services.task_update(task=task, actor=other_user, data={"name": "y"})
    with pytest.raises(DomainError):
        services.task_update(
            task=task, actor=user, data={"deadline": timezone.now() - timedelta(seconds=1)}
        )
    running = TaskFactory(owner=user, status=TaskStatus.RUNNING)
    with pytest.raises(Conflict) as error:
        services.task_delete(task=running, actor=user)
    assert error.value.code == "task_running" and Task.objects.filter(pk=running.pk).exists()
    services.task_delete(task=task, actor=user)
    assert not Task.objects.filter(pk=task.pk).exists()


# --- execution --------------------------------------------------------------------------


def test_claim_is_guarded(user):
    task = TaskFactory(owner=user)
    claimed = services.task_claim(task_id=task.pk)
    assert claimed.status == TaskStatus.RUNNING and claimed.attempts == 1
    assert services.task_claim(task_id=task.pk) is None  # a duplicate message does nothing


def test_claim_skips_overdue_tasks(user):
    task = TaskFactory(owner=user, deadline=timezone.now() - timedelta(seconds=1))
    assert services.task_claim(task_id=task.pk) is None


def test_finish_only_while_this_run_is_running(user):
    task = TaskFactory(owner=user)
    run = services.task_claim(task_id=task.pk)
    services.task_cancel(task=task, actor=user)
    assert not services.task_finish(task=run, result={"result": 1})
    assert not services.task_report_progress(task=run, progress=50)
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED and task.result is None


def test_a_lost_run_cannot_finish_a_newer_run(user):
    task = TaskFactory(owner=user)
    first = services.task_claim(task_id=task.pk)
    Task.objects.filter(pk=task.pk).update(status=TaskStatus.PENDING)  # rescued
    second = services.task_claim(task_id=task.pk)
    assert second.attempts == 2
    assert not services.task_finish(task=first, result={"result": "stale"})
    assert services.task_finish(task=second, result={"result": "fresh"})
    task.refresh_from_db()
    assert task.result == {"result": "fresh"}


def test_fail_records_the_error(user):
    run = services.task_claim(task_id=TaskFactory(owner=user).pk)
    assert services.task_fail(task=run, error="ValueError: bad")
    run.refresh_from_db()
    assert run.status == TaskStatus.FAILED and run.error == "ValueError: bad" and run.completed_at


# --- sweeps -----------------------------------------------------------------------------


def _statements(captured) -> list[str]:
    """The statements a sweep ran, without the savepoints of the test's own transaction."""
    return [
        q["sql"]
        for q in captured.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT"))
    ]


def test_expire_fails_overdue_active_tasks_in_one_update(user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from backend.notifications.models import Notification

    past = timezone.now() - timedelta(seconds=1)
    overdue = [
        TaskFactory(owner=user, status=status, deadline=past)
        for status in (TaskStatus.SCHEDULED, TaskStatus.PENDING, TaskStatus.RUNNING)
    ]
    finished = TaskFactory(owner=user, status=TaskStatus.COMPLETED, deadline=past)
    future = TaskFactory(owner=user, deadline=timezone.now() + timedelta(hours=1))
    no_deadline = TaskFactory(owner=user)
    with CaptureQueriesContext(connection) as captured:
        assert services.tasks_expire() == 3
    # Guarded UPDATEs and the INSERT … SELECT of the owner's task.failed mails: one
    # statement on PostgreSQL (one UPDATE per status left, and the kept counts' rows, between
    # the two statements that set and reset ops.counted_by_caller); on SQLite the INSERT over
    # the rows the UPDATE's WHERE picks.
    statements = _statements(captured)
    if connection.vendor == "postgresql":
        counting, statement, done = statements
        assert all("ops.counted_by_caller" in sql for sql in (counting, done))
        for status in ("scheduled", "pending", "running"):
            assert f'was_{status} AS (UPDATE "tasks_task"' in statement
        assert "RETURNING" in statement and 'INSERT INTO "ops_taskcountdelta"' in statement
        statements = [statement]
    else:
        insert, update = statements
        assert insert.startswith("WITH changed AS MATERIALIZED (")
        assert update.startswith('UPDATE "tasks_task"')
    assert 'INSERT INTO "notifications_notification"' in statements[0]
    assert sorted(Notification.objects.values_list("task_id", "event", "channel")) == sorted(
        (task.pk, "task.failed", "email") for task in overdue
    )
    for task in overdue:
        task.refresh_from_db()
        assert task.status == TaskStatus.FAILED and task.error == "deadline exceeded"
        assert task.completed_at is not None
    for task, status in (
        (finished, TaskStatus.COMPLETED),
        (future, "pending"),
        (no_deadline, "pending"),
    ):
        task.refresh_from_db()
        assert task.status == status


def test_expire_nobody_listens_to_is_one_statement_on_postgresql(user, django_assert_num_queries):
    from django.db import connection

    user.notify_email = []
    user.save()
    TaskFactory(owner=user, deadline=timezone.now() - timedelta(seconds=1))
    # The sweep between the test's savepoint pair: one statement (PostgreSQL, between the two
    # that set and reset what has it count its own rows), two (SQLite).
    with django_assert_num_queries(5 if connection.vendor == "postgresql" else 4):
        assert services.tasks_expire() == 1


def test_dispatch_releases_due_scheduled_tasks_and_sends_unsent(user, monkeypatch):
    sent = []
    monkeypatch.setattr(
        "backend.tasks.queue.publish", lambda jobs: sent.extend(jobs) or [j.id for j in jobs]
    )
    due = TaskFactory(owner=user, status=TaskStatus.SCHEDULED, run_at=timezone.now())
    later = TaskFactory(
        owner=user, status=TaskStatus.SCHEDULED, run_at=timezone.now() + timedelta(hours=1)
    )
    unsent = TaskFactory(owner=user, priority="urgent")
    recently_sent = TaskFactory(owner=user, enqueued_at=timezone.now())
    long_ago = TaskFactory(owner=user, enqueued_at=timezone.now() - timedelta(hours=1))
    TaskFactory(owner=user, task_type="manual", input_data={})
    outcome = services.tasks_dispatch()
    assert outcome == {"released": 1, "sent": 3, "due": 3}
    assert sent[0][0] == unsent.pk  # urgent first
    assert {row[0] for row in sent} == {due.pk, unsent.pk, long_ago.pk}
    assert recently_sent.pk not in {row[0] for row in sent}
    later.refresh_from_db()
    assert later.status == TaskStatus.SCHEDULED
    unsent.refresh_from_db()
    assert unsent.enqueued_at is not None  # marked sent, in one UPDATE for the batch


def test_rescue_requeues_or_fails_stale_worker_tasks(user, settings):
    # Shorter than the database server has been up (the rescue waits that long after it starts).
    settings.TASK_HEARTBEAT_TIMEOUT = 1
    stale = timezone.now() - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT + 5)
    lost = TaskFactory(owner=user, status=TaskStatus.RUNNING, heartbeat_at=stale, attempts=1)
    spent = TaskFactory(owner=user, status=TaskStatus.RUNNING, heartbeat_at=stale, attempts=3)
    alive = TaskFactory(
        owner=user, status=TaskStatus.RUNNING, heartbeat_at=timezone.now(), attempts=1
    )
    human = TaskFactory(
        owner=user, task_type="manual", input_data={}, status=TaskStatus.RUNNING, heartbeat_at=stale
    )
    assert services.tasks_rescue() == {"requeued": 1, "failed": 1}
    lost.refresh_from_db()
    spent.refresh_from_db()
    assert lost.status == TaskStatus.PENDING and lost.enqueued_at is None and lost.progress == 0
    assert spent.status == TaskStatus.FAILED and "out of attempts" in spent.error
    for task in (alive, human):
        task.refresh_from_db()
        assert task.status == TaskStatus.RUNNING


def test_the_rescue_waits_a_heartbeat_timeout_after_the_database_starts(
    user, settings, monkeypatch
):
    """While PostgreSQL was down no worker could record a heartbeat or an outcome: right
    after it came back every running task looked lost, and the rescue, first to reach it,
    ran again runs that were alive or done (a mail sent twice)."""
    from backend.tasks.services import sweeps

    if connection.vendor == "postgresql":
        started = sweeps.database_up_since()
        assert started is not None and started < timezone.now()
    else:
        assert sweeps.database_up_since() is None  # no server to restart
    stale = timezone.now() - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT + 5)
    silent = TaskFactory(owner=user, status=TaskStatus.RUNNING, heartbeat_at=stale, attempts=1)
    just_started = timezone.now() - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT - 10)
    monkeypatch.setattr(sweeps, "database_up_since", lambda: just_started)
    assert services.tasks_rescue() == {"requeued": 0, "failed": 0}
    silent.refresh_from_db()
    assert silent.status == TaskStatus.RUNNING
    long_ago = timezone.now() - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT + 1)
    monkeypatch.setattr(sweeps, "database_up_since", lambda: long_ago)
    assert services.tasks_rescue() == {"requeued": 1, "failed": 0}


def test_an_empty_name_in_an_edit_is_the_types_as_at_create(user):
    """An edit to "" stored an empty name, where a create without one takes the type's."""
    task = TaskFactory(owner=user, task_type="manual", input_data={}, name="to do")
    assert lifecycle.task_update(task=task, actor=user, data={"name": ""}).name == "manual"


def test_an_edit_of_a_task_deleted_meanwhile_is_not_found(user):
    """It was a 500 (Task.DoesNotExist from refresh_from_db) when a DELETE committed between
    the PATCH's read of the task and its update."""
    task = TaskFactory(owner=user, task_type="manual", input_data={})
    Task.objects.filter(pk=task.pk).delete()
    for data in ({"name": "x"}, {"deadline": timezone.now() + timedelta(hours=1)}):
        with pytest.raises(NotFound):
            lifecycle.task_update(task=task, actor=user, data=data)


def test_an_action_on_a_task_deleted_meanwhile_is_not_found(user, other_user):
    """A cancel or retry racing a DELETE answered 409 "…this one is scheduled" (an active
    status) for a task that was gone."""
    active = TaskFactory(owner=user, task_type="countdown", input_data={"seconds": 5})
    ended = TaskFactory(owner=user, status=TaskStatus.CANCELLED)
    manual = TaskFactory(owner=user, task_type="manual", input_data={}, assignee=other_user)
    Task.objects.filter(pk__in=[active.pk, ended.pk, manual.pk]).delete()

    with pytest.raises(NotFound):
        lifecycle.task_cancel(task=active, actor=user)
    with pytest.raises(NotFound):
        lifecycle.task_retry(task=ended, actor=user)
    with pytest.raises(NotFound):
        lifecycle.task_decline(task=manual, actor=other_user)


def test_a_delete_of_a_task_deleted_meanwhile_is_not_found(user):
    """The losers of concurrent DELETEs of a task that never ran were told 409 "A running
    task cannot be deleted; cancel it first"."""
    task = TaskFactory(owner=user, task_type="manual", input_data={})
    Task.objects.filter(pk=task.pk).delete()
    with pytest.raises(NotFound):
        lifecycle.task_delete(task=task, actor=user)


@pytest.mark.django_db(transaction=True)
def test_a_batched_delete_never_waits_on_rows_another_transaction_holds(monkeypatch):
    """The admin's delete of a large selection locked a batch of rows, waiting for those a
    sweep's UPDATE held while the sweep waited for the batch's: PostgreSQL ended one as a
    deadlock (the admin's page a 503 half-way). Held rows are skipped, tried again in a
    later pass, and counted when still held."""
    import threading

    from django.db import connections, transaction

    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no row locks: one writer at a time")
    monkeypatch.setattr(lifecycle, "DELETE_PAUSE", 0.01)
    owner = UserFactory()
    held, free = TaskFactory(owner=owner), [TaskFactory(owner=owner) for _ in range(3)]
    locked, done = threading.Event(), threading.Event()
    released_by_the_delete = []

    def hold():
        try:
            with transaction.atomic():
                list(Task.objects.select_for_update().filter(pk=held.pk))
                locked.set()
                released_by_the_delete.append(done.wait(20))
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(20)
    try:
        deleted, running, still_held = services.tasks_delete(queryset=Task.objects.all())
    finally:
        done.set()
        holder.join(30)
    assert released_by_the_delete == [True], "the delete waited for the held row"
    assert (deleted, running, still_held) == (3, [], 1)
    assert list(Task.objects.values_list("pk", flat=True)) == [held.pk]
    assert not any(Task.objects.filter(pk=task.pk).exists() for task in free)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "sqlite", reason="PostgreSQL refuses in one statement, no transaction"
)
def test_a_create_past_the_limit_is_refused_without_sqlites_write_lock(user, monkeypatch):
    """Each create took SQLite's IMMEDIATE transaction (the whole database's write lock) to
    find the assignee at the limit: a storm of them held every other write back for seconds."""
    from django.db import transaction

    TaskFactory.create_batch(5, owner=user)

    def no_transaction(*args, **kwargs):
        raise AssertionError("a transaction was opened")

    monkeypatch.setattr(transaction, "atomic", no_transaction)
    with pytest.raises(Conflict) as refused:
        services.task_create(owner=user, task_type="sum", input_data={"numbers": [1]})
    assert refused.value.code == "active_task_limit"

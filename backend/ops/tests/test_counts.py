"""The counts by status and type kept by PostgreSQL triggers (``TaskCountDelta``): they agree
with a count of the tasks after every kind of change, folding never changes them, and
concurrent changes never wait on each other for them."""

import json
from datetime import timedelta
from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count
from django.utils import timezone

from backend.ops import jobs, selectors, services
from backend.ops.models import TaskCountDelta
from backend.tasks import services as task_services
from backend.tasks.models import Task, TaskStatus, VisibleTaskCount
from backend.tasks.tests.factories import TaskFactory

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL triggers keep them (SQLite counts)"
)


def counted() -> dict[tuple[str, str], int]:
    """The truth: the tasks grouped and counted."""
    rows = Task.objects.order_by().values_list("status", "task_type").annotate(n=Count("*"))
    return {(status, task_type): n for status, task_type, n in rows}


def kept() -> dict[tuple[str, str], int]:
    """What the stats read: the sums of the count rows, pairs that sum to 0 left out."""
    return {(s, t): n for s, t, n in selectors._counted_groups() if n}


def assert_agree() -> None:
    truth = counted()
    assert kept() == truth
    figures = selectors.counts()
    for status, n in figures["by_status"].items():
        assert n == sum(v for (s, _), v in truth.items() if s == status), status
    for task_type, n in figures["by_type"].items():
        assert n == sum(v for (_, t), v in truth.items() if t == task_type), task_type


def delta_rows() -> int:
    return TaskCountDelta.objects.count()


@postgresql_only
@pytest.mark.django_db
def test_the_counts_follow_creates_status_changes_and_deletes(user, staff):
    assert_agree()
    pending = TaskFactory.create_batch(3, owner=user, status="pending", task_type="sum")
    TaskFactory(owner=user, status="scheduled", task_type="reverse")
    Task.objects.bulk_create(
        [Task(owner=user, task_type="uppercase", status="completed") for _ in range(50)]
    )
    assert_agree()
    assert counted()[("completed", "uppercase")] == 50

    # The worker's path: claim, then finish or fail.
    claimed = task_services.task_claim(task_id=pending[0].pk)
    assert_agree()
    assert task_services.task_finish(task=claimed, result={"sum": 6})
    failed = task_services.task_claim(task_id=pending[1].pk)
    assert task_services.task_fail(task=failed, error="boom")
    assert_agree()

    # A progress report changes neither status nor type: it appends nothing.
    running = task_services.task_claim(task_id=pending[2].pk)
    before = delta_rows()
    assert task_services.task_report_progress(task=running, progress=40)
    Task.objects.filter(pk=running.pk).update(name="renamed", heartbeat_at=timezone.now())
    assert delta_rows() == before
    assert_agree()

    # Bulk changes, a change of type, saves through the model, deletes.
    Task.objects.filter(task_type="uppercase", status="completed").update(status="failed")
    Task.objects.filter(pk=running.pk).update(task_type="lowercase", status="cancelled")
    task = Task.objects.get(status="scheduled")
    task.status = TaskStatus.PENDING
    task.save()
    assert_agree()
    task_services.task_delete(task=Task.objects.get(pk=pending[0].pk), actor=staff)
    Task.objects.filter(task_type="uppercase").delete()
    assert_agree()
    Task.objects.all().delete()
    assert_agree()
    assert kept() == {}
    assert selectors.counts()["by_status"]["failed"] == 0


@postgresql_only
@pytest.mark.django_db
def test_an_update_is_counted_by_row_unless_its_caller_counts_it(user):
    """A status change appends two rows from the row trigger (-1, +1); a statement run
    under counted_by_caller is left to its caller (the sweeps, which add one row per pair
    they moved), and the rows after it are counted by the trigger again."""
    from django.db import connection, transaction

    from backend.ops import counts

    TaskFactory.create_batch(30, owner=user, status="pending", task_type="sum")
    TaskFactory.create_batch(5, owner=user, status="running", task_type="reverse")
    services.task_counts_fold()
    before = delta_rows()

    Task.objects.filter(status__in=["pending", "running"]).update(status="failed")
    assert delta_rows() == before + 2 * 35
    assert_agree()
    Task.objects.update(name="renamed")  # no count changes: nothing appended
    assert delta_rows() == before + 2 * 35

    with transaction.atomic(), connection.cursor() as cursor:
        with counts.counted_by_caller(cursor):
            cursor.execute("UPDATE tasks_task SET status = 'cancelled' WHERE task_type = 'sum'")
        assert delta_rows() == before + 2 * 35  # left to the caller
        cursor.execute("UPDATE tasks_task SET status = 'completed' WHERE task_type = 'reverse'")
    assert delta_rows() == before + 2 * 35 + 2 * 5  # counted again after the block
    # The caller's rows, as a sweep writes them: failed/sum -30, cancelled/sum +30.
    TaskCountDelta.objects.create(status="failed", task_type="sum", delta=-30)
    TaskCountDelta.objects.create(status="cancelled", task_type="sum", delta=30)
    assert_agree()


@postgresql_only
@pytest.mark.django_db
def test_the_sweeps_keep_them_exact(user, settings):
    now = timezone.now()
    past = now - timedelta(minutes=5)
    TaskFactory.create_batch(3, owner=user, status="pending", deadline=past, enqueued_at=now)
    TaskFactory.create_batch(2, owner=user, status="scheduled", run_at=past)
    # Shorter than the database server has been up (the rescue waits that long after it starts).
    settings.TASK_HEARTBEAT_TIMEOUT = 1
    stale = now - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT + 60)
    TaskFactory.create_batch(
        2, owner=user, status="running", attempts=1, started_at=stale, heartbeat_at=stale
    )
    assert_agree()

    assert task_services.tasks_expire() == 3
    assert_agree()
    task_services.tasks_dispatch()
    assert_agree()
    task_services.tasks_rescue()
    assert_agree()
    assert counted().get(("failed", "sum")) == 3
    assert counted().get(("scheduled", "sum")) is None


@postgresql_only
@pytest.mark.django_db
def test_purge_tasks_keeps_them_exact_and_folds_after(user):
    old = timezone.now() - timedelta(days=40)
    for status in ("completed", "failed", "cancelled"):
        TaskFactory.create_batch(4, owner=user, status=status, completed_at=old)
    TaskFactory.create_batch(2, owner=user, status="completed", completed_at=timezone.now())
    TaskFactory(owner=user, status="pending")
    services.task_counts_fold()
    assert_agree()

    out = StringIO()
    call_command("purge_tasks", "--older-than", "30", "--batch-size", "5", stdout=out)
    assert "Removed 12 task(s)" in out.getvalue()
    assert_agree()
    assert counted() == {("completed", "sum"): 2, ("pending", "sum"): 1}
    # The purge folded what its batches appended: one row per pair that has tasks.
    assert delta_rows() == 2


@postgresql_only
@pytest.mark.django_db
def test_folding_keeps_the_sums_in_one_row_per_pair(user):
    tasks = TaskFactory.create_batch(5, owner=user, status="pending", task_type="sum")
    for task in tasks:
        Task.objects.filter(pk=task.pk).update(status="running")
        Task.objects.filter(pk=task.pk).update(status="completed")
    TaskFactory(owner=user, status="failed", task_type="reverse")
    Task.objects.filter(status="failed").delete()  # a pair that sums to 0
    before = kept()
    rows = delta_rows()
    assert rows > 3

    removed = jobs.fold_task_counts()  # the Beat job, called directly

    assert removed == rows - 1
    assert delta_rows() == 1
    assert kept() == before == counted() == {("completed", "sum"): 5}
    assert services.task_counts_fold() == 0  # nothing more to fold


@postgresql_only
@pytest.mark.django_db
def test_rebuild_after_a_load_that_went_around_the_triggers(user):
    TaskFactory.create_batch(2, owner=user, status="pending")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        Task.objects.bulk_create(
            [Task(owner=user, task_type="sum", status="failed") for _ in range(7)]
        )
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
    assert kept() != counted()  # the triggers were off for the load

    services.task_counts_rebuild()

    assert_agree()
    assert kept() == {("pending", "sum"): 2, ("failed", "sum"): 7}


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_truncate_empties_them(user):
    TaskFactory.create_batch(3, owner=user)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {Task._meta.db_table} CASCADE")
    assert delta_rows() == 0
    assert_agree()


def _raw() -> psycopg.Connection:
    """A second connection to the test database, as another worker would hold."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_status_changes_never_wait_on_each_other_for_the_counts(user):
    first, second = TaskFactory.create_batch(2, owner=user, status="pending", task_type="sum")
    table = Task._meta.db_table
    with _raw() as a, _raw() as b:
        for conn in (a, b):
            conn.execute("SET lock_timeout = '2s'")  # waiting on the other would fail here
        # Two open transactions move tasks of the same (status, type) pair.
        a.execute(f"UPDATE {table} SET status = 'running' WHERE id = %s", (first.pk,))
        b.execute(f"UPDATE {table} SET status = 'running' WHERE id = %s", (second.pk,))
        # A fold meanwhile neither waits for them nor loses their rows.
        services.task_counts_fold()
        assert kept() == {("pending", "sum"): 2}  # not committed yet: not counted
        b.commit()
        a.commit()
    assert_agree()
    assert kept() == {("running", "sum"): 2}


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_the_migration_counts_the_tasks_already_there(user):
    TaskFactory.create_batch(3, owner=user, status="completed", task_type="sum")
    TaskFactory(owner=user, status="pending", task_type="countdown")
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("ops")
    executor.migrate([("ops", None)])  # triggers and table gone
    try:
        Task.objects.filter(task_type="sum").update(status="failed")  # counted by nobody
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
    assert_agree()
    assert kept() == {("failed", "sum"): 3, ("pending", "countdown"): 1}


@pytest.mark.skipif(connection.vendor == "postgresql", reason="SQLite only")
@pytest.mark.django_db
def test_sqlite_counts_the_tasks_and_keeps_nothing(user):
    TaskFactory.create_batch(2, owner=user, status="failed", task_type="sum")
    services.task_counts_rebuild()
    assert jobs.fold_task_counts() == 0
    assert delta_rows() == 0
    assert kept() == counted() == {("failed", "sum"): 2}


@pytest.mark.skipif(connection.vendor == "postgresql", reason="SQLite keeps no counts")
@pytest.mark.django_db
def test_task_stats_recount_on_sqlite_says_there_is_nothing_to_recount(user):
    """It said the counts were "recounted from the tasks", and nothing had been done."""
    TaskFactory.create_batch(2, owner=user, status="failed", task_type="sum")
    out, err = StringIO(), StringIO()
    call_command("task_stats", "--json", "--recount", stdout=out, stderr=err)
    assert err.getvalue() == "SQLite counts the tasks at every read: nothing to recount.\n"
    assert json.loads(out.getvalue())["by_status"]["failed"] == 2


@postgresql_only
@pytest.mark.django_db
def test_task_stats_recount(user, other_user):
    gone = TaskFactory(owner=other_user, assignee=user, task_type="manual", input_data={})
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        TaskFactory.create_batch(3, owner=user, status="running", task_type="countdown")
        Task.objects.filter(pk=gone.pk).delete()
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
    out, err = StringIO(), StringIO()
    call_command("task_stats", "--json", stdout=out)
    assert json.loads(out.getvalue())["by_status"]["running"] == 0  # not counted by the load

    out = StringIO()
    call_command("task_stats", "--json", "--recount", stdout=out, stderr=err)
    figures = json.loads(out.getvalue())
    assert figures["by_status"]["running"] == 3 and figures["by_type"]["countdown"] == 3
    assert "recounted" in err.getvalue()
    assert_agree()
    # Each user's list count too: the load's three tasks in, the deleted one out.
    lists = dict(VisibleTaskCount.objects.values_list("user_id", "total"))
    assert lists == {user.pk: 3}

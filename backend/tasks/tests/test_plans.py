"""The statements that change one row, planned as PostgreSQL plans them after an ANALYZE
taken while nothing was pending: they look the row up by its key. Left to itself, the
planner takes a partial index over pending rows (or active tasks) for empty and scans all it
now holds (``sql.key_guard``)."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from backend.notifications import services as notifications
from backend.notifications.models import Channel, Event, Notification, NotificationStatus
from backend.tasks import services
from backend.tasks.models import Task, TaskStatus

from .factories import TaskFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="PostgreSQL's planner and its statistics"
    ),
]

HISTORY = 3000
PENDING = 300
KEYS = {"tasks_task_pkey", "notifications_notification_pkey"}


def _scans(plan: dict, table: str) -> set[str]:
    """How the plan reads ``table``: the indexes it scans, or "seq" for the whole table."""
    found = set()
    if plan.get("Relation Name") == table and "Scan" in plan["Node Type"]:
        if plan["Node Type"] == "Bitmap Heap Scan":  # its indexes are its children's
            found |= _bitmap_indexes(plan)
        else:
            found.add(plan.get("Index Name", "seq"))
    for child in plan.get("Plans", ()):
        found |= _scans(child, table)
    return found


def _bitmap_indexes(plan: dict) -> set[str]:
    found = {plan["Index Name"]} if plan["Node Type"] == "Bitmap Index Scan" else set()
    for child in plan.get("Plans", ()):
        found |= _bitmap_indexes(child)
    return found


@contextlib.contextmanager
def planned(table: str):
    """The indexes each statement on ``table`` would scan, planned with its values (as a
    statement is before psycopg prepares it); the statements then run as usual."""
    plans: list[tuple[str, set[str]]] = []

    def explain(execute, sql, params, many, context):
        if not many and table in sql and sql.lstrip().split()[0] in ("UPDATE", "SELECT", "WITH"):
            with context["connection"].connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
                (plan,) = cursor.fetchone()
            plan = plan if isinstance(plan, list) else json.loads(plan)
            plans.append((sql, _scans(plan[0]["Plan"], table)))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        yield plans


def _analyzed_idle(user) -> None:
    """Statistics taken while no task was active and no notification pending, over tables
    large enough that a key is worth looking up (a few pages are read whole)."""
    now = timezone.now()
    done = Task.objects.bulk_create(
        TaskFactory.build(owner=user, status=TaskStatus.COMPLETED, completed_at=now)
        for _ in range(HISTORY)
    )
    Notification.objects.bulk_create(
        _notification(user, done[0], status=NotificationStatus.DELIVERED) for _ in range(HISTORY)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tasks_task")
        cursor.execute("ANALYZE notifications_notification")


def _notification(user, task, **fields) -> Notification:
    return Notification(
        event=Event.COMPLETED,
        channel=Channel.EMAIL,
        target="someone@example.com",
        user=user,
        task_id=task.pk,
        next_attempt_at=timezone.now() - timedelta(seconds=1),
        **fields,
    )


@pytest.fixture
def pending(user) -> list[Task]:
    _analyzed_idle(user)
    return Task.objects.bulk_create(TaskFactory.build(owner=user) for _ in range(PENDING))


def _by_key(plans, also: frozenset[str] = frozenset()) -> None:
    """Each statement reads its row by the key (and, in a subquery, only the indexes
    ``also`` names)."""
    assert plans, "no statement on the table was planned"
    for sql, indexes in plans:
        assert indexes & KEYS and indexes <= KEYS | also, f"{sorted(indexes)} for {sql}"


def test_left_to_itself_the_planner_scans_the_active_tasks(pending):
    """What the guards avoid: without them, a partial index qualifies and wins."""
    with planned("tasks_task") as plans:
        Task.objects.filter(pk=pending[0].pk, status=TaskStatus.PENDING).update(progress=1)
    ((_, indexes),) = plans
    assert indexes and not indexes & KEYS


def test_a_runs_statements_look_their_task_up_by_its_key(pending):
    with planned("tasks_task") as plans:
        claimed = services.task_claim(task_id=pending[0].pk)
        assert services.task_report_progress(task=claimed, progress=50)
        assert services.task_finish(task=claimed, result={"result": 6})
        read = services.task_read(task_id=pending[1].pk)
        assert services.task_fail(task=read, error="boom")
        assert services.task_finish_unread(
            task_id=pending[2].pk, task_type="sum", started_at=timezone.now(), result=6
        )
        now = timezone.now()
        batch = [
            {"id": task.pk, "task_type": "sum", "started_at": now, "completed_at": now, "result": 6}
            for task in pending[3:5]
        ]
        assert len(services.tasks_finish_unread(batch)) == 2
    _by_key(plans)
    statuses = dict(
        Task.objects.filter(pk__in=[t.pk for t in pending[:5]]).values_list("pk", "status")
    )
    assert statuses == {
        pending[0].pk: TaskStatus.COMPLETED,
        pending[1].pk: TaskStatus.FAILED,
        pending[2].pk: TaskStatus.COMPLETED,
        pending[3].pk: TaskStatus.COMPLETED,
        pending[4].pk: TaskStatus.COMPLETED,
    }


def test_a_users_state_changes_look_their_task_up_by_its_key(pending, user):
    with planned("tasks_task") as plans:
        services.task_cancel(task=pending[0], actor=user)
    _by_key([(sql, indexes) for sql, indexes in plans if sql.lstrip().startswith("UPDATE")])
    pending[0].refresh_from_db()
    assert pending[0].status == TaskStatus.CANCELLED


def test_a_deliverys_statements_look_their_notification_up_by_its_key(user):
    _analyzed_idle(user)
    now = timezone.now()
    task = Task.objects.first()
    made = Notification.objects.bulk_create(_notification(user, task) for _ in range(PENDING))
    with planned("notifications_notification") as plans:
        claimed = notifications.notification_claim(notification_id=made[0].pk)
        assert claimed is not None
        notifications.notification_record(
            notification=claimed,
            started_at=now,
            outcome=notifications.Outcome(delivered=True),
        )
    # The claim asks, in a subquery, whether the receiver rests: from the index of the
    # owner's unreachable pending notifications (none here).
    _by_key(
        [(sql, indexes) for sql, indexes in plans if sql.lstrip().startswith("UPDATE")],
        also=frozenset({"notification_unreachable"}),
    )
    made[0].refresh_from_db()
    assert made[0].status == NotificationStatus.DELIVERED

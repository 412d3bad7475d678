import uuid

from django.conf import settings
from django.db import models

from backend.common import sql


class TaskStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (TaskStatus.SCHEDULED, TaskStatus.PENDING, TaskStatus.RUNNING)
# The same as SQL, written into statements rather than bound: a partial index over the
# active tasks serves a query only when its planner sees the values (a prepared statement's
# generic plan on PostgreSQL, any statement on SQLite).
ACTIVE_SQL = "status IN ({})".format(", ".join(f"'{status.value}'" for status in ACTIVE_STATUSES))
TERMINAL_STATUSES = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


def in_status(*statuses: str) -> models.Func:
    """The guard "its status is one of ``statuses``" of a statement that picks a task by its
    key (a state change), written so that no partial index qualifies (``sql.key_guard``)."""
    return sql.key_guard(models.Q(status__in=statuses))


# The same guard in statements written as SQL, after ``{table}.id = %s``.
STATUS_GUARD_SQL = "({table}.status = %s) IS TRUE"


class TaskPriority(models.TextChoices):
    LOW = "low", "Low"
    NORMAL = "normal", "Normal"
    HIGH = "high", "High"
    URGENT = "urgent", "Urgent"


# Priority is ordered by rank, not alphabetically; the rank is stored beside the name.
PRIORITY_RANK = {
    TaskPriority.LOW: 0,
    TaskPriority.NORMAL: 1,
    TaskPriority.HIGH: 2,
    TaskPriority.URGENT: 3,
}


# A task assigned to someone other than its owner.
GIVEN = models.Q(assignee__isnull=False) & ~models.Q(assignee=models.F("owner"))


class Task(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of their own: each is the first column of a composite index below.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="owned_tasks",
        db_index=False,
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="assigned_tasks",
        null=True,
        blank=True,
        db_index=False,
    )
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    task_type = models.CharField(max_length=50)
    input_data = models.JSONField(default=dict, blank=True)
    priority = models.CharField(
        max_length=10, choices=TaskPriority.choices, default=TaskPriority.NORMAL
    )
    priority_rank = models.PositiveSmallIntegerField(
        default=PRIORITY_RANK[TaskPriority.NORMAL], editable=False
    )
    status = models.CharField(max_length=10, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)  # noqa: DJ001 - null means "no error"
    progress = models.PositiveSmallIntegerField(default=0)
    deadline = models.DateTimeField(null=True, blank=True)
    run_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1, editable=False)
    # When a worker last showed signs of life on this task (claim or progress).
    heartbeat_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When the task was last handed to the broker; NULL means it still has to be sent.
    enqueued_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # Each index serves a query (checked with EXPLAIN): the lists (by owner, by assignee,
        # everything for staff, newest first with id breaking ties), the limit (the active
        # tasks of an assignee), and the sweeps through partial indexes over the few rows
        # they look at, so a status change rewrites few index entries.
        indexes = [
            models.Index(fields=["owner", "-created_at", "id"], name="task_owner_created"),
            # The active tasks an assignee holds (the limit, their statistics): a finished
            # task leaves it, so a run's outcome or an expiry writes no entry here.
            models.Index(
                fields=["assignee"],
                name="task_assignee_active",
                condition=models.Q(status__in=["scheduled", "pending", "running"]),
            ),
            models.Index(fields=["-created_at", "id"], name="task_created"),
            # Tasks given to someone other than their owner (manual ones): the second half
            # of a user's list, beside the owner's own.
            models.Index(
                fields=["assignee", "-created_at", "id"], name="task_given_created", condition=GIVEN
            ),
            # Only the active tasks that have a deadline: most have none, and a claim or a
            # create of one of those then writes nothing here.
            models.Index(
                fields=["deadline"],
                name="task_active_deadline",
                condition=models.Q(
                    status__in=["scheduled", "pending", "running"], deadline__isnull=False
                ),
            ),
            models.Index(
                fields=["run_at"],
                name="task_scheduled_run_at",
                condition=models.Q(status="scheduled"),
            ),
            models.Index(
                fields=["enqueued_at"],
                name="task_pending_enqueued",
                condition=models.Q(status="pending"),
            ),
            models.Index(
                fields=["heartbeat_at"],
                name="task_running_heartbeat",
                condition=models.Q(status="running"),
            ),
            # The operational figures (backend/ops/selectors.py): throughput and run times
            # read the finished tasks of the last hour or day from this index alone
            # (PostgreSQL: the columns they need are included); the oldest pending task is
            # the first entry of the next. The counts by status and type come from rows
            # kept by triggers on PostgreSQL; SQLite counts through an index of its own
            # (migration 0007), which PostgreSQL would only keep up to date at every
            # status change.
            models.Index(
                fields=["completed_at"],
                name="task_finished_completed",
                condition=models.Q(status__in=["completed", "failed"]),
                include=["status", "task_type", "started_at"],
            ),
            models.Index(
                fields=["created_at"],
                name="task_pending_created",
                condition=models.Q(status="pending"),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(progress__gte=0, progress__lte=100), name="task_progress_0_100"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.task_type} ({self.status})"

    def save(self, *args, **kwargs):
        self.priority_rank = PRIORITY_RANK[TaskPriority(self.priority)]
        super().save(*args, **kwargs)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


class VisibleTaskCount(models.Model):
    """How many tasks a user's list holds (owned, or given to them by others), so the list's
    count is one row read whatever the number of tasks. Kept by a database trigger on
    PostgreSQL (migration 0004) in the same transaction as every insert, delete or change of
    owner or assignee; SQLite counts the rows instead."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    total = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.user_id}: {self.total}"

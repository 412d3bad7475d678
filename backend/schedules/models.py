import uuid

from django.conf import settings
from django.db import models
from django_celery_beat.models import PeriodicTask

from backend.tasks.models import Task, TaskPriority


class Schedule(models.Model):
    """A task template fired by beat, every ``interval_seconds`` or on a ``crontab``.

    Beat reads its one ``PeriodicTask``, which the services write in the same transaction
    as this row. ``last_run_at`` and ``total_runs`` are kept by the firing service.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="schedules"
    )
    # The template of each task it creates.
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    task_type = models.CharField(max_length=50)
    input_data = models.JSONField(default=dict, blank=True)
    priority = models.CharField(
        max_length=10, choices=TaskPriority.choices, default=TaskPriority.NORMAL
    )
    # Each created task's deadline, this many seconds after the firing.
    deadline_seconds = models.PositiveIntegerField(null=True, blank=True)
    # When: exactly one of the two.
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    crontab = models.CharField(
        max_length=200, blank=True, help_text="minute hour day-of-month month day-of-week"
    )
    timezone = models.CharField(max_length=64, default="UTC")
    enabled = models.BooleanField(default=True)
    periodic_task = models.OneToOneField(
        PeriodicTask, on_delete=models.PROTECT, related_name="task_schedule", editable=False
    )
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    total_runs = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="schedule_owner_created")]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(interval_seconds__isnull=False, crontab="")
                    | (models.Q(interval_seconds__isnull=True) & ~models.Q(crontab=""))
                ),
                name="schedule_interval_xor_crontab",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.task_type} ({self.when})"

    @property
    def when(self) -> str:
        if self.interval_seconds is not None:
            return f"every {self.interval_seconds} s"
        return f"{self.crontab} {self.timezone}"


class ScheduleRun(models.Model):
    """One firing: the task it created, or why none was (``code`` and ``detail``)."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="runs")
    fired_at = models.DateTimeField()
    # Kept when the task is deleted later (no constraint), so the run still names it.
    task = models.ForeignKey(
        Task,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    code = models.CharField(max_length=50, blank=True)
    detail = models.TextField(blank=True)
    # The beat message that caused it: a message delivered twice fires once.
    message_id = models.CharField(max_length=255, null=True, blank=True, unique=True)

    class Meta:
        ordering = ["-fired_at", "-id"]
        indexes = [models.Index(fields=["schedule", "-fired_at"], name="schedule_run_fired")]

    def __str__(self) -> str:
        return f"{self.fired_at:%Y-%m-%d %H:%M:%S} {self.outcome}"

    @property
    def outcome(self) -> str:
        return "refused" if self.code else "created"

from django.db import models


class TaskCountDelta(models.Model):
    """One change to the number of tasks of a status and type: the counts by status and by
    type are the sums of these rows, read in one small query instead of a scan of every task.

    PostgreSQL only (migrations 0001 and 0002): statement triggers on ``tasks_task`` append
    rows in the same transaction as the change, one per (status, type) pair whose count the
    INSERT, UPDATE or DELETE statement changed (a claim adds -1 for pending and +1 for
    running; a sweep that expires thousands of tasks, a few rows), so the sums are exact at
    any moment. Appending, rather than updating one row per pair, means two workers changing
    tasks of the same status never wait on each other. ``services.task_counts_fold`` replaces
    the rows by one per pair now and then, so the table stays small. SQLite counts the tasks
    instead."""

    id = models.BigAutoField(primary_key=True)
    status = models.CharField(max_length=10)
    task_type = models.CharField(max_length=50)
    delta = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.status}/{self.task_type}: {self.delta:+d}"

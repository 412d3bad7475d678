"""Operator actions on tasks in bulk: purging old finished tasks."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from backend.tasks.models import TERMINAL_STATUSES, Task


def purgeable_tasks(*, older_than: timedelta, now: datetime | None = None) -> QuerySet[Task]:
    """Finished tasks (completed, failed, cancelled) that finished before ``now -
    older_than``; an active task never matches, whatever its age."""
    cutoff = (now or timezone.now()) - older_than
    finished_before = Q(completed_at__lt=cutoff) | Q(
        completed_at__isnull=True, updated_at__lt=cutoff
    )
    return Task.objects.filter(finished_before, status__in=TERMINAL_STATUSES).order_by()


def purge_counts(queryset: QuerySet[Task]) -> dict[str, int]:
    """How many of ``queryset`` per status (one query)."""
    rows = queryset.values_list("status").annotate(n=Count("*"))
    return dict(sorted(rows))


def tasks_purge(
    *, older_than: timedelta, batch_size: int = 1000, now: datetime | None = None
) -> dict[str, int]:
    """Delete the purgeable tasks in batches of ``batch_size``, each in its own short
    transaction, so a large purge never holds one long transaction or lock. Each batch
    re-checks the status in its DELETE: a task made active again meanwhile (a retry) stays.
    Returns the count removed per status."""
    now = now or timezone.now()
    removed: dict[str, int] = {}
    while True:
        with transaction.atomic():
            ids = list(
                purgeable_tasks(older_than=older_than, now=now).values_list("pk", flat=True)[
                    :batch_size
                ]
            )
            if not ids:
                return dict(sorted(removed.items()))
            batch = purgeable_tasks(older_than=older_than, now=now).filter(pk__in=ids)
            for status, n in purge_counts(batch).items():
                removed[status] = removed.get(status, 0) + n
            batch.delete()

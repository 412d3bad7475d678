"""Reads of users: the task statistics are annotations, one query for a whole page."""

from django.db.models import Count, Q, QuerySet

from .models import User

STATUS_COUNTS = {
    "total_tasks_pending": "pending",
    "total_tasks_running": "running",
    "total_tasks_completed": "completed",
    "total_tasks_failed": "failed",
}


def with_task_statistics(queryset: QuerySet[User]) -> QuerySet[User]:
    annotations = {"total_tasks_assigned": Count("assigned_tasks")}
    for field, status in STATUS_COUNTS.items():
        annotations[field] = Count("assigned_tasks", filter=Q(assigned_tasks__status=status))
    return queryset.annotate(**annotations)


def user_list(*, viewer: User) -> QuerySet[User]:
    """Staff see everyone; others see active users only."""
    queryset = User.objects.all()
    if not viewer.is_staff:
        queryset = queryset.filter(is_active=True)
    return with_task_statistics(queryset).order_by("username")


def user_with_statistics(*, pk) -> User:
    return with_task_statistics(User.objects.filter(pk=pk)).get()

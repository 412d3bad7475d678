"""Reads of tasks."""

from django.db.models import Q, QuerySet

from backend.users.models import User

from .models import Task


def tasks_visible_to(user: User) -> QuerySet[Task]:
    """Staff see every task; others the tasks they own or are assigned to."""
    queryset = Task.objects.select_related("owner", "assignee")
    if not user.is_staff:
        queryset = queryset.filter(Q(owner=user) | Q(assignee=user))
    return queryset

"""Reads of tasks."""

from __future__ import annotations

from django.db import connection
from django.db.models import Q, QuerySet

from backend.users.models import User

from .models import GIVEN, Task, VisibleTaskCount


def tasks_visible_to(user: User) -> QuerySet[Task]:
    """Staff see every task; others the tasks they own or are assigned to."""
    queryset = Task.objects.select_related("owner", "assignee")
    if not user.is_staff:
        queryset = queryset.filter(Q(owner=user) | Q(assignee=user))
    return queryset


class VisibleTasks:
    """A user's list (owned, or given to them) for the paginator, as two halves that each
    follow an index in the list's order: the tasks they own, and the tasks others gave them.

    ``WHERE owner = u OR assignee = u ORDER BY created_at`` can follow no index: its cost grows
    with every task in the table. Here a page is one ``UNION ALL`` of the two halves, each cut
    to the page's end, then the rows of that page. The count of an unfiltered list is the
    user's ``VisibleTaskCount`` row; with filters, two counts on the same indexes.
    """

    ordered = True

    def __init__(self, filtered: QuerySet[Task], user: User, *, unfiltered: bool = False):
        self.user = user
        self.unfiltered = unfiltered
        self.ordering = list(filtered.query.order_by) or ["-created_at", "id"]
        base = filtered.order_by(*self.ordering)
        self.owned = base.filter(owner=user)
        self.given = base.filter(GIVEN, assignee=user)

    def count(self) -> int:
        if self.unfiltered:
            counted = VisibleTaskCount.objects.filter(user=self.user).values_list("total")
            return next(iter(counted), (0,))[0]
        return self.filtered_count()

    def filtered_count(self) -> int:
        """Both halves counted in one statement."""
        parts, params = [], []
        for half in (self.owned, self.given):
            sql, half_params = half.order_by().values("pk").query.sql_with_params()
            parts.append(f"(SELECT COUNT(*) FROM ({sql}) AS half)")
            params.extend(half_params)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {' + '.join(parts)}", params)
            return cursor.fetchone()[0]

    def __getitem__(self, page: slice) -> list[Task]:
        start, stop = page.start or 0, page.stop
        if stop <= start:  # an empty page
            return []
        names = [name.lstrip("-") for name in self.ordering]
        columns = list(dict.fromkeys(["id", *names]))
        halves = [half.values_list(*columns)[:stop] for half in (self.owned, self.given)]
        union = halves[0].union(halves[1], all=True).order_by(*self.ordering)
        ids = [row[0] for row in union[start:stop]]
        rows = Task.objects.select_related("owner", "assignee").in_bulk(ids)
        return [rows[pk] for pk in ids if pk in rows]


def task_list_source(
    user: User, apply_filters, *, unfiltered: bool = False
) -> QuerySet[Task] | VisibleTasks:
    """What the list paginates, with the request's filters, search and ordering applied by
    ``apply_filters``: for a user, the two-index form where the database can run it
    (PostgreSQL); staff, and SQLite (which cannot slice the halves of a UNION), the plain
    query."""
    newest_first = ("-created_at", "id")
    if user.is_staff or not connection.features.supports_slicing_ordering_in_compound:
        return apply_filters(tasks_visible_to(user).order_by(*newest_first))
    filtered = apply_filters(Task.objects.order_by(*newest_first))
    return VisibleTasks(filtered, user, unfiltered=unfiltered)

"""Reads of tasks."""

from __future__ import annotations

import functools

from django.db import connection
from django.db.models import F, Q, QuerySet

from backend.common import sql
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
        self.ordering = list(filtered.query.order_by) or list(NEWEST_FIRST)
        # The list as it comes by default (no filter, newest first): its page is one
        # statement written once, not compiled from querysets on every request.
        self.plain = unfiltered and self.ordering == list(NEWEST_FIRST)
        self.filtered = filtered

    @functools.cached_property
    def halves(self) -> tuple[QuerySet[Task], QuerySet[Task]]:
        """The tasks they own, and the tasks others gave them."""
        base = self.filtered.order_by(*self.ordering)
        return base.filter(owner=self.user), base.filter(GIVEN, assignee=self.user)

    def count(self) -> int:
        if self.unfiltered:
            with connection.cursor() as cursor:
                cursor.execute(_COUNT_SQL, [self.user.pk])
                row = cursor.fetchone()
            return row[0] if row else 0
        return self.filtered_count()

    def filtered_count(self) -> int:
        """Both halves counted in one statement."""
        parts, params = [], []
        for half in self.halves:
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
        if self.plain:
            user = self.user.pk
            return _PAGE_ROWS.fetch(_PAGE_SQL, [user, stop, user, stop, stop - start, start])
        names = [_column(order) for order in self.ordering]
        columns = list(dict.fromkeys(["id", *names]))
        halves = [half.values_list(*columns)[:stop] for half in self.halves]
        union = halves[0].union(halves[1], all=True).order_by(*self.ordering)
        ids = [row[0] for row in union[start:stop]]
        # The users' names alone, not the users: all a task's representation shows of them.
        rows = Task.objects.annotate(
            owner_username=F("owner__username"), assignee_username=F("assignee__username")
        ).in_bulk(ids)
        return [rows[pk] for pk in ids if pk in rows]


def _column(order) -> str:
    """The column an ordering term sorts by: ``"-created_at"``, or an expression such as
    ``F("deadline").asc(nulls_last=True)`` (``filters.StableOrderingFilter``)."""
    if isinstance(order, str):
        return order.lstrip("-")
    return order.expression.name


NEWEST_FIRST = ("-created_at", "id")
_TASKS = Task._meta.db_table
_PAGE_ROWS = sql.Rows(Task, extra=("owner_username", "assignee_username"))
_USERS = User._meta.db_table
# What the unfiltered count reads: the user's row kept by the database (migration 0004).
_COUNT_SQL = f"SELECT total FROM {VisibleTaskCount._meta.db_table} WHERE user_id = %s"
# The default page: the two halves, each cut to the page's end along its index
# (task_owner_created; task_given_created, whose predicate the second half repeats word for
# word so the planner can use it), merged, cut to the page, then joined to the tasks and to
# their users' names. The same rows and order as the querysets above (a test compares them).
_PAGE_SQL = f"""
    WITH page AS (
        (SELECT id, created_at FROM {_TASKS} WHERE owner_id = %s
            ORDER BY created_at DESC, id LIMIT %s)
        UNION ALL
        (SELECT id, created_at FROM {_TASKS}
            WHERE assignee_id = %s AND assignee_id IS NOT NULL
                AND NOT (assignee_id = owner_id AND assignee_id IS NOT NULL)
            ORDER BY created_at DESC, id LIMIT %s)
        ORDER BY created_at DESC, id LIMIT %s OFFSET %s
    )
    SELECT {_PAGE_ROWS.columns("task")}, owner.username, assignee.username
    FROM page
    JOIN {_TASKS} AS task ON task.id = page.id
    JOIN {_USERS} AS owner ON owner.id = task.owner_id
    LEFT JOIN {_USERS} AS assignee ON assignee.id = task.assignee_id
    ORDER BY page.created_at DESC, page.id
"""


def task_list_source(
    user: User, apply_filters, *, unfiltered: bool = False
) -> QuerySet[Task] | VisibleTasks:
    """What the list paginates, with the request's filters, search and ordering applied by
    ``apply_filters``: for a user, the two-index form where the database can run it
    (PostgreSQL); staff, and SQLite (which cannot slice the halves of a UNION), the plain
    query."""
    if user.is_staff or not connection.features.supports_slicing_ordering_in_compound:
        return apply_filters(tasks_visible_to(user).order_by(*NEWEST_FIRST))
    filtered = apply_filters(Task.objects.order_by(*NEWEST_FIRST))
    return VisibleTasks(filtered, user, unfiltered=unfiltered)

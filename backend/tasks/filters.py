import datetime
import uuid

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import F
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import extend_schema_field

from backend.common.filters import ChoiceInFilter, QueryReadingMixin

from . import types
from .models import Task, TaskPriority, TaskStatus


class UserRefField(forms.CharField):
    """A user's uuid, ``me`` or ``none``."""

    words = ("me", "none")
    hint = "Give a user id (uuid), 'me' or 'none'."

    def clean(self, value):
        value = super().clean(value)
        if value in (None, ""):
            return None
        if value in self.words:
            return value
        try:
            return uuid.UUID(value)
        except ValueError as exc:
            raise ValidationError(self.hint) from exc


class OwnerRefField(UserRefField):
    """A user's uuid or ``me``: every task has an owner."""

    words = ("me",)
    hint = "Give a user id (uuid) or 'me'."


@extend_schema_field({"type": "string", "description": "a user id (uuid), 'me' or 'none'"})
class UserRefFilter(django_filters.Filter):
    field_class = UserRefField

    def filter(self, qs, value):
        if value is None:
            return qs
        if value == "none":
            return qs.filter(**{f"{self.field_name}__isnull": True})
        if value == "me":
            value = self.parent.request.user.pk
        return qs.filter(**{self.field_name: value})


@extend_schema_field({"type": "string", "description": "a user id (uuid) or 'me'"})
class OwnerRefFilter(UserRefFilter):
    field_class = OwnerRefField


class BoundedIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time that stays representable once converted to UTC."""

    def clean(self, value):
        value = super().clean(value)
        if value is not None:
            # Any ISO 8601 offset is valid, but PostgreSQL refuses those beyond ±15:59:
            # queries get UTC.
            try:
                value = value.astimezone(datetime.UTC)
            except OverflowError as exc:
                raise ValidationError("Enter a date-time between years 1 and 9999.") from exc
        return value


class BoundedIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = BoundedIsoDateTimeField


class StableOrderingFilter(django_filters.OrderingFilter):
    """Ties are broken by newest first, then id, so pages never overlap. A task without the
    field (no deadline, not finished) comes after those with it, either way and on every
    database (PostgreSQL sorts NULL as the largest value, SQLite as the smallest)."""

    nullable = frozenset({"deadline", "completed_at"})

    def get_ordering_value(self, param):
        value = super().get_ordering_value(param)
        name = value.removeprefix("-")
        if name not in self.nullable:
            return value
        field = F(name)
        return field.desc(nulls_last=True) if value.startswith("-") else field.asc(nulls_last=True)

    def filter(self, qs, value):
        qs = super().filter(qs, value)
        if value:
            qs = qs.order_by(*qs.query.order_by, "-created_at", "id")
        return qs


class TaskFilter(QueryReadingMixin, django_filters.FilterSet):
    status = ChoiceInFilter(choices=TaskStatus.choices, help_text="one or several, comma-separated")
    task_type = ChoiceInFilter(
        choices=lambda: [(name, name) for name in types.names()],
        help_text="one or several, comma-separated",
    )
    priority = ChoiceInFilter(
        choices=TaskPriority.choices, help_text="one or several, comma-separated"
    )
    assignee = UserRefFilter(help_text="a user id, 'me' or 'none'")
    owner = OwnerRefFilter(help_text="a user id or 'me'")
    created_after = BoundedIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = BoundedIsoDateTimeFilter(field_name="created_at", lookup_expr="lte")
    deadline_after = BoundedIsoDateTimeFilter(field_name="deadline", lookup_expr="gte")
    deadline_before = BoundedIsoDateTimeFilter(field_name="deadline", lookup_expr="lte")
    ordering = StableOrderingFilter(
        fields=(
            ("created_at", "created_at"),
            ("deadline", "deadline"),
            ("priority_rank", "priority"),
            ("status", "status"),
            ("completed_at", "completed_at"),
        ),
        help_text="created_at, deadline, priority (by rank), status or completed_at; "
        "prefix - for descending; comma-separated for several. Tasks with no deadline (or "
        "not finished) come last either way",
    )

    class Meta:
        model = Task
        fields = []

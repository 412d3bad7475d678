from django.db import transaction
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.fields import SkipField, empty
from rest_framework.response import Response

from backend.common.idempotency import idempotent
from backend.common.routing import UUID_PATTERN
from backend.common.serializers import unwritable_keys
from backend.common.views import requested_action
from backend.schedules import selectors, services
from backend.schedules.models import Schedule
from backend.schedules.validation import template_context

from .serializers import (
    LIGHT_CHANGES,
    NOT_IN_TEMPLATE,
    ScheduleRunSerializer,
    ScheduleSerializer,
    ScheduleWriteSerializer,
    each_checked,
    refuse_json_non_booleans,
)


def _as_dict(data) -> dict:
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
    refuse_json_non_booleans(data)
    return data


def _form_changes(form, fields) -> dict:
    """A PATCH sent as form fields, each read as a POST or PUT form reads it (digits as a
    number, an empty box as none, JSON text as JSON), so that the schedule they make is
    then validated as JSON is. Keys of no writable field are kept as sent (refused by
    name after)."""
    changes, errors = {}, {}
    for key in form:
        field = fields.get(key)
        if field is None or field.read_only:
            changes[key] = form.get(key)
            continue
        value = field.get_value(form)
        if value is empty:  # an empty box for a field with no "none": not a change to make
            errors[key] = ["This field may not be blank."]
            continue
        try:
            changes[key] = field.run_validation(value)
        except SkipField:
            continue
        except ValidationError as exc:
            errors[key] = exc.detail
    if errors:
        raise ValidationError(errors)
    return changes


def _refuse_what_a_patch_cannot_change(changes: dict) -> None:
    """A key a PATCH cannot change (read-only, such as ``owner`` or ``total_runs``, or
    unknown) is a 400 naming it, as a task's PATCH answers, rather than a 200 that changed
    nothing. The task-only fields keep the template's own messages."""
    writable = {
        name for name, field in ScheduleWriteSerializer().fields.items() if not field.read_only
    }
    errors = unwritable_keys(
        changes,
        writable=writable | set(NOT_IN_TEMPLATE),
        known=ScheduleSerializer.Meta.fields,
        cannot="This field cannot be changed.",
    )
    if errors:
        raise ValidationError(errors)


# Bodies that work as they are (Swagger UI's "Try it out" otherwise offers one made up from
# the serializer, pairing a task type with another's input).
SCHEDULE_EXAMPLES = [
    OpenApiExample(
        "every hour",
        summary="A sum every hour",
        value={
            "name": "hourly sum",
            "task_type": "sum",
            "input_data": {"numbers": [1, 2, 3]},
            "interval_seconds": 3600,
        },
        request_only=True,
    ),
    OpenApiExample(
        "weekdays at 06:15",
        summary="An uppercase on weekdays at 06:15, Paris time (crontab)",
        value={
            "name": "weekday mornings",
            "task_type": "uppercase",
            "input_data": {"data": "good morning"},
            "crontab": "15 6 * * 1-5",
            "timezone": "Europe/Paris",
        },
        request_only=True,
    ),
]


class ScheduleViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Recurring schedules: yours (staff: all). Another user's schedule is 404."""

    lookup_value_regex = UUID_PATTERN
    serializer_class = ScheduleSerializer
    permission_classes = [permissions.IsAuthenticated]

    def get_serializer_class(self):
        # The browsable API's forms (POST, PUT, PATCH) and OPTIONS show what a write takes.
        if requested_action(self) in ("create", "update", "partial_update"):
            return ScheduleWriteSerializer
        return ScheduleSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Schedule.objects.none()
        return selectors.schedules_visible_to(self.request.user).order_by("-created_at", "id")

    def _respond(self, schedule, code=status.HTTP_200_OK):
        return Response(
            ScheduleSerializer(schedule, context=self.get_serializer_context()).data, status=code
        )

    def _validated(self, data: dict, owner, enabled_now: bool = False) -> dict:
        context = {**template_context(owner, self.request), "enabled_now": enabled_now}
        serializer = ScheduleWriteSerializer(data=data, context=context)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    @extend_schema(
        request=ScheduleWriteSerializer,
        responses={201: ScheduleSerializer},
        examples=SCHEDULE_EXAMPLES,
    )
    @idempotent
    def create(self, request, *args, **kwargs):
        """Create a schedule: a task template and when to fire it (interval or crontab).
        With an ``Idempotency-Key`` header, a retry returns the first response."""
        data = self._validated(request.data, request.user)
        schedule = services.schedule_create(owner=request.user, **data)
        return self._respond(schedule, status.HTTP_201_CREATED)

    @extend_schema(
        request=ScheduleWriteSerializer, responses=ScheduleSerializer, examples=SCHEDULE_EXAMPLES
    )
    @transaction.atomic
    def update(self, request, *args, **kwargs):
        """Replace a schedule (fields left out take their defaults)."""
        schedule = services.schedule_locked(self.get_object())
        data = self._validated(request.data, schedule.owner, schedule.enabled)
        return self._respond(
            services.schedule_update(schedule=schedule, actor=request.user, data=data)
        )

    def _light_changes(self, schedule: Schedule, changes: dict) -> dict | None:
        """``changes``, each checked alone, when all they do is pause the schedule, rename
        it or describe it: the template is not checked again, so a schedule whose template
        no longer validates (its file deleted, a limit lowered since) can still be paused.
        None for any other change, turning a paused schedule on included: the schedule it
        makes is checked whole."""
        if not changes or not set(changes) <= LIGHT_CHANGES:
            return None
        fields = ScheduleWriteSerializer(context=template_context(schedule.owner, self.request))
        checked, errors = each_checked(fields.fields, changes)
        if errors:
            raise ValidationError(errors)
        if checked.get("enabled") and not schedule.enabled:
            return None
        return checked

    @extend_schema(
        request=ScheduleWriteSerializer,
        responses=ScheduleSerializer,
        examples=[
            OpenApiExample("pause", value={"enabled": False}, request_only=True),
            OpenApiExample("every 10 minutes", value={"interval_seconds": 600}, request_only=True),
        ],
    )
    @transaction.atomic
    def partial_update(self, request, *args, **kwargs):
        """Change some fields; the schedule they make is validated whole. Giving crontab
        clears interval_seconds and the other way round."""
        # Merged with the row as it is under its lock: an edit committed meanwhile (a pause)
        # is kept, not overwritten with what this request read before it.
        schedule = services.schedule_locked(self.get_object())
        if hasattr(request.data, "getlist"):  # a form's QueryDict
            _refuse_what_a_patch_cannot_change(request.data.dict())
            context = template_context(schedule.owner, self.request)
            changes = _form_changes(request.data, ScheduleWriteSerializer(context=context).fields)
        else:
            changes = _as_dict(request.data)
            _refuse_what_a_patch_cannot_change(changes)
        current = services.schedule_as_written(schedule)
        light = self._light_changes(schedule, changes)
        if light is not None:
            return self._respond(
                services.schedule_update(schedule=schedule, actor=request.user, data=light)
            )
        if "crontab" in changes and "interval_seconds" not in changes:
            current["interval_seconds"] = None
        if "interval_seconds" in changes and "crontab" not in changes:
            current["crontab"] = None
        data = self._validated({**current, **changes}, schedule.owner, schedule.enabled)
        return self._respond(
            services.schedule_update(schedule=schedule, actor=request.user, data=data)
        )

    def destroy(self, request, *args, **kwargs):
        """Delete a schedule and its periodic task (the tasks it created stay)."""
        services.schedule_delete(schedule=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=ScheduleRunSerializer(many=True))
    @action(detail=True, methods=["get"])
    def runs(self, request, pk=None, format=None):
        """The schedule's firings, newest first: the task created, or the refusal."""
        runs = selectors.schedule_runs(self.get_object())
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(ScheduleRunSerializer(page, many=True).data)

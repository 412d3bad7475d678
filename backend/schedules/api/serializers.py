from django.conf import settings
from django.core.validators import MinValueValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.utils import html

from backend.schedules import selectors, timing
from backend.schedules.models import Schedule, ScheduleRun
from backend.tasks.api.serializers import TaskCreateSerializer
from backend.tasks.types.base import StrictIntegerField

MAX_SECONDS = 366 * 24 * 3600
# What a task create takes but a template does not: each firing sets its own.
NOT_IN_TEMPLATE = {
    "deadline": "A schedule has no fixed deadline; use deadline_seconds (after each firing).",
    "run_at": "A schedule's tasks run when it fires; use interval_seconds or crontab.",
    "assignee": "A schedule's tasks are assigned to its owner.",
    "callback_url": "A schedule's tasks report through their owner's notification "
    "preferences (webhook_url on /api/users/me/).",
}

# A change that only pauses, renames or describes a schedule: each field is checked alone,
# not the template, so one whose template no longer validates (its file deleted, a limit
# lowered since) can still be paused or renamed (the API's PATCH, the admin's form).
LIGHT_CHANGES = frozenset({"enabled", "name", "description"})


def each_checked(fields, values: dict) -> tuple[dict, dict]:
    """Each of ``values`` checked by its field alone (a light change): the values as the
    fields take them, and the errors of those they refuse."""
    checked, errors = {}, {}
    for key, value in values.items():
        try:
            checked[key] = fields[key].run_validation(value)
        except serializers.ValidationError as exc:
            errors[key] = exc.detail
    return checked, errors


def refuse_json_non_booleans(data: dict) -> None:
    """In a JSON body ``enabled`` is true or false: DRF's boolean also takes 0, 1, "yes",
    "on"…, which the schema does not offer (a form's box is read as a form's)."""
    value = data.get("enabled")
    if value is not None and not isinstance(value, bool):
        raise serializers.ValidationError({"enabled": ["Must be true or false."]})


class CheckboxField(serializers.BooleanField):
    """A boolean whose absence from a form means false, as a browser leaves an unchecked
    box out (DRF would take the field's default); absent from JSON, the default."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.default_empty_html = False

    def get_value(self, dictionary):
        # Sent empty from a form: false too (DRF would take the default).
        if html.is_html_input(dictionary) and dictionary.get(self.field_name) == "":
            return False
        return super().get_value(dictionary)


INACTIVE_OWNER = "The schedule's owner is deactivated: it cannot be enabled."


class ScheduleWriteSerializer(TaskCreateSerializer):
    """A schedule: the task it creates (``task_type``, ``input_data``, ``name``,
    ``description``, ``priority``, checked as ``POST /api/tasks/`` checks a task, and again
    at each firing), an optional ``deadline_seconds``, and when it fires: every
    ``interval_seconds`` or on a ``crontab`` in a ``timezone``."""

    # The template is validated by TaskCreateSerializer itself (the parent class).

    deadline = None
    run_at = None
    assignee = None
    callback_url = None  # a schedule's tasks report through their owner's preferences

    deadline_seconds = StrictIntegerField(
        min_value=1,
        max_value=MAX_SECONDS,
        required=False,
        allow_null=True,
        default=None,
        help_text="each created task's deadline, this many seconds after the firing",
    )
    interval_seconds = StrictIntegerField(
        # At least SCHEDULE_MIN_INTERVAL: see get_fields.
        max_value=MAX_SECONDS,
        required=False,
        allow_null=True,
        default=None,
        initial=3600,  # the browsable API's forms start from a schedule that can be sent
        help_text="fire every this many seconds (at least SCHEDULE_MIN_INTERVAL); "
        "give this or crontab",
    )
    crontab = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        allow_null=True,
        default="",
        help_text="five fields: minute hour day-of-month month day-of-week, e.g. "
        "'*/5 * * * *' or '0 9 * * 1-5'; give this or interval_seconds",
    )
    timezone = serializers.CharField(
        max_length=64,
        required=False,
        default="UTC",
        initial="UTC",
        help_text="IANA time zone name of the crontab, e.g. 'Europe/Paris'",
    )
    enabled = CheckboxField(required=False, default=True, initial=True)

    def get_fields(self):
        fields = super().get_fields()
        # The setting as it is now (read per instance, not at import): checked, and shown as
        # the schema's minimum.
        minimum = settings.SCHEDULE_MIN_INTERVAL
        interval = fields["interval_seconds"]
        interval.min_value = minimum
        interval.validators = [
            *(v for v in interval.validators if not isinstance(v, MinValueValidator)),
            MinValueValidator(
                minimum,
                message=f"Ensure this value is at least {minimum} (SCHEDULE_MIN_INTERVAL seconds).",
            ),
        ]
        return fields

    def validate_crontab(self, value):
        if not value:
            return ""
        try:
            return timing.normalize_crontab(value)
        except timing.TimingError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_timezone(self, value):
        try:
            return timing.validate_timezone(value)
        except timing.TimingError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def answer_keys(self) -> set[str]:
        # (Those a schedule does not take are refused in validate(), saying why.)
        return {*ScheduleSerializer.Meta.fields, *NOT_IN_TEMPLATE}

    def to_internal_value(self, data):
        if isinstance(data, dict) and not html.is_html_input(data):
            refuse_json_non_booleans(data)
        return super().to_internal_value(data)

    def validate(self, attrs):
        errors = {}
        for key, message in NOT_IN_TEMPLATE.items():
            if key in self.initial_data:
                errors[key] = [message]
        has_interval = attrs.get("interval_seconds") is not None
        has_crontab = bool(attrs.get("crontab"))
        if has_interval and has_crontab:
            message = "Give either interval_seconds or crontab, not both."
            errors.update(interval_seconds=[message], crontab=[message])
        elif not has_interval and not has_crontab:
            message = "Give interval_seconds or crontab: when the schedule fires."
            errors.update(interval_seconds=[message], crontab=[message])
        owner = self.context.get("owner")
        turned_on = attrs.get("enabled") and not self.context.get("enabled_now")
        if turned_on and owner is not None and not owner.is_active:
            # Beat would only record each firing as refused and turn the schedule off (as it
            # does at the next firing of one left on: an edit of it is not refused).
            errors["enabled"] = [INACTIVE_OWNER]
        sent = attrs.get("input_data")
        try:
            attrs = super().validate(attrs)
        except serializers.ValidationError as exc:
            errors = {**exc.detail, **errors}
        if errors:
            raise serializers.ValidationError(errors)
        # Kept as sent, checked: each firing fills in what it leaves out (an email's `to`,
        # the owner's address then; its subject, the schedule's name then), as a task created
        # at that moment would. Filled in now, an email schedule mailed the address its owner
        # had when it was made, however often they changed it.
        attrs["input_data"] = sent
        attrs.pop("deadline", None)
        attrs.pop("run_at", None)
        attrs.pop("assignee", None)
        return attrs


class ScheduleSerializer(serializers.ModelSerializer):
    """A schedule as every schedule endpoint answers."""

    owner_username = serializers.CharField(source="owner.username", read_only=True)
    crontab = serializers.SerializerMethodField()
    next_run_at = serializers.SerializerMethodField()

    class Meta:
        model = Schedule
        fields = (
            "id",
            "name",
            "description",
            "task_type",
            "input_data",
            "priority",
            "deadline_seconds",
            "interval_seconds",
            "crontab",
            "timezone",
            "enabled",
            "owner",
            "owner_username",
            "periodic_task",
            "next_run_at",
            "last_run_at",
            "total_runs",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields

    def get_crontab(self, schedule) -> str | None:
        return schedule.crontab or None

    @extend_schema_field(serializers.DateTimeField(allow_null=True))  # null: never again
    def get_next_run_at(self, schedule) -> str | None:
        moment = selectors.schedule_next_run_at(schedule)
        return serializers.DateTimeField().to_representation(moment) if moment else None


class ScheduleRunSerializer(serializers.ModelSerializer):
    outcome = serializers.CharField(read_only=True, help_text="created | refused")
    task = serializers.UUIDField(source="task_id", read_only=True, allow_null=True)
    task_status = serializers.SerializerMethodField()
    code = serializers.SerializerMethodField()
    detail = serializers.SerializerMethodField()

    class Meta:
        model = ScheduleRun
        fields = ("id", "fired_at", "outcome", "task", "task_status", "code", "detail")
        read_only_fields = fields

    def get_task_status(self, run) -> str | None:
        # None when no task was created, or when it has been deleted since.
        return run.task.status if run.task_id and run.task else None

    def get_code(self, run) -> str | None:
        return run.code or None

    def get_detail(self, run) -> str | None:
        return run.detail or None

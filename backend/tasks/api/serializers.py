import datetime
import functools
import json
import uuid

from django.conf import settings
from django.contrib.auth import get_user_model
from django.urls import get_script_prefix, get_urlconf
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField, empty
from rest_framework.reverse import reverse
from rest_framework.utils import html

from backend.common import recording
from backend.common.serializers import (
    FORM_KEYS,
    CopiedFieldsMixin,
    RejectUnknownFieldsMixin,
    StrictJSONField,
    TextField,
    unwritable_keys,
    validate_outbound_url,
)
from backend.tasks import types
from backend.tasks.models import Task, TaskPriority

User = get_user_model()

EDITABLE_FIELDS = ("name", "description", "priority", "deadline")


class TaskSerializer(serializers.ModelSerializer):
    """The full task, as every task endpoint answers."""

    url = serializers.SerializerMethodField(help_text="This task's address in the API.")
    result = serializers.SerializerMethodField()
    owner_username = serializers.CharField(source="owner.username", read_only=True)
    assignee_username = serializers.CharField(
        source="assignee.username", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = Task
        fields = (
            "id",
            "url",
            "name",
            "description",
            "task_type",
            "input_data",
            "priority",
            "status",
            "progress",
            "result",
            "error",
            "owner",
            "owner_username",
            "assignee",
            "assignee_username",
            "deadline",
            "run_at",
            "attempts",
            "created_at",
            "updated_at",
            "started_at",
            "completed_at",
        )
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, task) -> str:
        """Absolute: from the request at hand (API responses), else from PUBLIC_BASE_URL
        (webhooks, mails, exports), as the notification mails' links are."""
        return self._url_pattern().replace(_ANY_ID, str(task.pk))

    def _url_pattern(self) -> str:
        """A task's address with a stand-in id, worked out once per response (a page of
        tasks shares its scheme, host and path)."""
        pattern = self.__dict__.get("_url")
        if pattern is None:
            path = _task_path(get_urlconf() or settings.ROOT_URLCONF, get_script_prefix())
            request = self.context.get("request")
            if request is not None:
                pattern = request.build_absolute_uri(path)
            else:
                pattern = settings.PUBLIC_BASE_URL + path
            self.__dict__["_url"] = pattern
        return pattern

    @extend_schema_field({"nullable": True})
    def get_result(self, task):
        return self._result(task)

    def _result(self, task):
        """The result as stored, but a file's ``download_url`` (a report's), stored as a
        path, is absolute as the file's own is (``GET /api/files/{id}/``): from the request
        at hand, else from PUBLIC_BASE_URL."""
        result = task.result
        if task.task_type != "report_generation" or not isinstance(result, dict):
            return result  # (a manual task's result is what its assignee gave, as given)
        path = result.get("download_url")
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
            return result
        request = self.context.get("request")
        url = (
            request.build_absolute_uri(path)
            if request is not None
            else settings.PUBLIC_BASE_URL + path
        )
        return {**result, "download_url": url}

    def to_representation(self, task) -> dict:
        """What ``ModelSerializer.to_representation`` returns for the fields above, built
        directly: every task response and every row of the list goes through here, and the
        generic path (a field object per column, per task) costs more than the request's
        database work. A test holds the two to the same output for every kind of task."""
        owner_name = getattr(task, "owner_username", _UNSET)
        if owner_name is _UNSET:
            owner_name = task.owner.username
        assignee_name = getattr(task, "assignee_username", _UNSET)
        if assignee_name is _UNSET:
            assignee_name = task.assignee.username if task.assignee_id is not None else None
        return {
            "id": str(task.pk),
            "url": self._url_pattern().replace(_ANY_ID, str(task.pk)),
            "name": task.name,
            "description": task.description,
            "task_type": task.task_type,
            "input_data": task.input_data,
            "priority": str(task.priority),
            "status": str(task.status),
            "progress": task.progress,
            "result": self._result(task),
            "error": task.error,
            "owner": str(task.owner_id),
            "owner_username": owner_name,
            "assignee": None if task.assignee_id is None else str(task.assignee_id),
            "assignee_username": assignee_name,
            "deadline": _iso(task.deadline),
            "run_at": _iso(task.run_at),
            "attempts": task.attempts,
            "created_at": _iso(task.created_at),
            "updated_at": _iso(task.updated_at),
            "started_at": _iso(task.started_at),
            "completed_at": _iso(task.completed_at),
        }


_ANY_ID = "00000000-0000-0000-0000-000000000000"


@functools.lru_cache(maxsize=16)
def _task_path(urlconf: str, script_prefix: str) -> str:
    """A task's path with the stand-in id, the same for every response under one URL
    configuration and script prefix (``reverse`` reads the prefix itself)."""
    return reverse("task-detail", kwargs={"pk": _ANY_ID}, urlconf=urlconf)


_UNSET = object()


def _iso(value: datetime.datetime | None) -> str | None:
    """As DRF's DateTimeField writes a stored (aware) date-time: ISO 8601 in the current time
    zone (UTC), ``Z`` for +00:00."""
    if value is None:
        return None
    text = value.astimezone(timezone.get_current_timezone()).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class TaskInputField(StrictJSONField):
    """A task's input. In a JSON body, the JSON object itself. In an HTML form (the browsable
    API), the text of a JSON object, an empty box meaning ``{}``. The OpenAPI schema lists
    each type's input (``backend.tasks.api.schema``)."""

    def get_value(self, dictionary):
        value = super().get_value(dictionary)
        if getattr(value, "is_json_string", False) and not value.strip():
            return {}
        return value


class UserIdField(serializers.PrimaryKeyRelatedField):
    """A user, by id. The browsable API renders a text box, never a list of every user
    (which would show all usernames to anyone).

    Only staff reach a deactivated account through it (and learn that it is one, 400
    ``assignee_inactive``); to anyone else it does not exist, as in ``/api/users/``, so the
    answer tells them nothing a random id would not."""

    def __init__(self, *, blank_is_omitted: bool = False, **kwargs):
        # An HTML form's empty box means "not given" when the field has a default.
        self.blank_is_omitted = blank_is_omitted
        kwargs.setdefault(
            "style", {"base_template": "input.html", "input_type": "text", "placeholder": "uuid"}
        )
        super().__init__(queryset=User.objects.all(), **kwargs)

    def get_value(self, dictionary):
        if html.is_html_input(dictionary) and self.field_name in dictionary:
            typed = dictionary.get(self.field_name).strip()
            if typed == "" and self.blank_is_omitted:
                return empty
            if typed.lower() == "null" and self.allow_null:
                return None  # a form cannot send JSON's null: the word stands for it
        return super().get_value(dictionary)

    default_error_messages = {"incorrect_type": "A user's id is a UUID string, not {data_type}."}

    def to_internal_value(self, data):
        # A number was read as the UUID it encodes (123: 00000000-…-00000000007b), and
        # answered "object does not exist" where a string answered "not a valid UUID".
        if not isinstance(data, str | uuid.UUID):
            self.fail("incorrect_type", data_type=type(data).__name__)
        return super().to_internal_value(data)

    def get_queryset(self):
        request = self.context.get("request")
        if request is not None and request.user.is_staff:
            return User.objects.all()
        return User.objects.filter(is_active=True)


class TaskCreateSerializer(CopiedFieldsMixin, serializers.Serializer):
    """A task to create: its type and that type's input (``GET /api/task-types/`` lists
    both), and optionally a name, a description, a priority, a deadline, a later start
    (``run_at``), an assignee and a ``callback_url`` told of its outcome."""

    task_type = serializers.ChoiceField(choices=[], initial="sum")
    input_data = TaskInputField(
        required=False,
        default=dict,
        # The browsable API's forms start from a task that can be sent as it is.
        initial=lambda: {"numbers": [1, 2, 3]},
        help_text="A JSON object whose fields depend on task_type (GET /api/task-types/ "
        "lists each type's input). In the browsable API's form, JSON text such as "
        '{"seconds": 5} for a countdown; an empty box means {}.',
        style={"base_template": "textarea.html", "rows": 6},
    )
    name = TextField(max_length=200, required=False, allow_blank=True, default="")
    description = TextField(
        required=False,
        allow_blank=True,
        default="",
        max_length=10_000,
        style={"base_template": "textarea.html", "rows": 3},
    )
    priority = serializers.ChoiceField(
        choices=TaskPriority.choices, default=TaskPriority.NORMAL, initial=TaskPriority.NORMAL
    )
    deadline = serializers.DateTimeField(required=False, allow_null=True, default=None)
    run_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    assignee = UserIdField(
        blank_is_omitted=True,
        required=False,
        allow_null=True,
        help_text="A user's id; defaults to you. null leaves a manual task unassigned.",
    )
    callback_url = serializers.CharField(
        max_length=2048,
        required=False,
        allow_blank=True,
        default="",
        write_only=True,
        help_text="An http(s) URL receiving this task's events as signed webhooks "
        "(task.created, task.completed, task.failed, task.cancelled).",
    )

    def get_fields(self):
        fields = super().get_fields()
        fields["task_type"].choices = types.names()
        return fields

    def get_initial(self):
        # The browsable API's raw-data form: "assignee": null, which a worker task refuses,
        # becomes you (as when it is left out).
        initial = super().get_initial()
        user = getattr(self.context.get("request"), "user", None)
        if initial.get("assignee", "") is None and getattr(user, "is_authenticated", False):
            initial["assignee"] = str(user.pk)
        return initial

    def answer_keys(self) -> set[str]:
        """The keys of the object as the API answers it: sent back in a create (a copy of
        an answer), they are ignored, as DRF ignores read-only fields."""
        return set(TaskSerializer.Meta.fields)

    def to_internal_value(self, data):
        """Any other key not taken here is refused with the fields that are, so a typo
        ("priorty") never goes unnoticed; reported beside the other fields' errors."""
        unknown = {}
        if hasattr(data, "keys"):  # JSON, a form or a multipart body alike
            writable = {*self.fields, *self.answer_keys()}
            if set(data) - writable - FORM_KEYS:  # the message only then: every create passes
                taken = ", ".join(
                    name for name, field in self.fields.items() if not field.read_only
                )
                unknown = unwritable_keys(
                    data,
                    writable=writable,
                    known=(),
                    unknown=f"Unknown field. The fields taken here: {taken}.",
                )
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, dict):
                beside = self._input_errors_beside(data, exc.detail)
                if unknown or beside:
                    raise serializers.ValidationError({**exc.detail, **beside, **unknown}) from None
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value

    def _input_errors_beside(self, data, errors) -> dict:
        """``input_data``'s own errors for its type, when another field (a priority, a
        deadline) was refused but the type and the input's JSON were not: found together,
        so a client fixes both at once (they came one request after the other)."""
        if "task_type" in errors or "input_data" in errors or not hasattr(data, "get"):
            return {}
        kind = types.find(data.get("task_type")) if isinstance(data.get("task_type"), str) else None
        if kind is None:
            return {}
        field = self.fields["input_data"]
        try:
            raw = field.run_validation(field.get_value(data))  # a form's box read as DRF reads it
        except (serializers.ValidationError, SkipField):
            return {}
        if not isinstance(raw, dict):
            return {"input_data": ["Expected a JSON object."]}
        texts = {key: data.get(key) for key in ("name", "description")}
        inputs = self._inputs(
            kind, raw, **{k: v if isinstance(v, str) else "" for k, v in texts.items()}
        )
        return {} if inputs.is_valid() else {"input_data": inputs.errors}

    def _inputs(self, kind, data: dict, *, name: str, description: str):
        """The type's serializer of ``data``, for the task's owner: the requesting user
        unless the context names one."""
        request = self.context.get("request")
        owner = self.context.get("owner") or getattr(request, "user", None)
        task = {"name": name, "description": description}
        return kind.input_for(data, owner=owner, task=task, context=self.context)

    def validate_callback_url(self, value):
        return validate_outbound_url(value)

    def validate(self, attrs):
        kind = types.get(attrs["task_type"])
        data = attrs.get("input_data")
        if not isinstance(data, dict):
            raise serializers.ValidationError({"input_data": ["Expected a JSON object."]})
        inputs = self._inputs(
            kind, data, name=attrs.get("name", ""), description=attrs.get("description", "")
        )
        if not inputs.is_valid():
            raise serializers.ValidationError({"input_data": inputs.errors})
        attrs["input_data"] = inputs.validated_data
        _check_broker_can_hold(kind, inputs.validated_data)
        return attrs


# What a task's message may stay unacknowledged beyond its time limit: until the hard limit
# (RECORD_BUDGET more, for its outcome tried again while the database fails), and 10 s for
# its reservation and its claim. A task whose limit left no room for them was taken: its
# message could still pass the consumer timeout, and RabbitMQ then closed the channel,
# which stops the whole worker (Celery's "Unrecoverable error: PreconditionFailed").
CONSUMER_TIMEOUT_MARGIN = recording.RECORD_BUDGET + 10


def _check_broker_can_hold(kind: types.TaskType, input_data: dict) -> None:
    """On RabbitMQ a task must end before the server's consumer timeout, or the server
    closes the worker's channel (the worker stops; its tasks are handed out again): refuse
    such a task up front."""
    if not (settings.BROKER_IS_AMQP and kind.runs_on_worker):
        return
    limit = kind.time_limit_for(input_data)
    if limit + CONSUMER_TIMEOUT_MARGIN >= settings.BROKER_CONSUMER_TIMEOUT:
        raise serializers.ValidationError(
            {
                "input_data": [
                    f"This task may run {limit} s, which with {CONSUMER_TIMEOUT_MARGIN} s "
                    "more for its message is longer than the broker lets a task stay "
                    f"unacknowledged (BROKER_CONSUMER_TIMEOUT = "
                    f"{settings.BROKER_CONSUMER_TIMEOUT} s; raise RabbitMQ's consumer_timeout "
                    "and that setting together)."
                ]
            },
            code="exceeds_broker_timeout",
        )


class TaskUpdateSerializer(serializers.Serializer):
    name = TextField(max_length=200, required=False, allow_blank=True)
    description = TextField(required=False, allow_blank=True, max_length=10_000)
    priority = serializers.ChoiceField(choices=TaskPriority.choices, required=False)
    deadline = serializers.DateTimeField(required=False, allow_null=True)

    def validate(self, attrs):
        other = unwritable_keys(
            self.initial_data,
            writable=EDITABLE_FIELDS,
            known=(),
            unknown="This field cannot be changed here. Only name, description, priority and "
            "deadline can; status changes through the task's actions.",
        )
        if other:
            raise serializers.ValidationError(other)
        return attrs


class AssignSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    assignee = UserIdField(allow_null=True, help_text="a user's id; null unassigns a manual task")


class NoInputSerializer(serializers.Serializer):
    """Actions that take no body (the browsable API shows their button alone)."""


# A completion's result as JSON, in bytes of UTF-8: it is shown in every list of the task
# and sent in its notifications.
MAX_RESULT_BYTES = 1024 * 1024


class CompleteSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    result = StrictJSONField(
        required=False,
        allow_null=True,
        default=None,
        help_text=f"any JSON value, at most {MAX_RESULT_BYTES} bytes as JSON",
    )

    def validate_result(self, value):
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        if size > MAX_RESULT_BYTES:
            raise serializers.ValidationError(
                f"At most {MAX_RESULT_BYTES} bytes of JSON are allowed; this is {size}.",
                code="too_large",
            )
        return value


class TaskTypeSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    runs_on_worker = serializers.BooleanField()
    max_attempts = serializers.IntegerField()
    input_schema = serializers.DictField()

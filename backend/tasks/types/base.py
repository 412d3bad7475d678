"""The task-type registry: what each type accepts, how it runs, and its limits.

A type is one module in this package that calls ``register(TaskType(...))``; the package
imports every module in it, so adding a type is adding one module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.utils import html

from backend.common.errors import Conflict
from backend.common.serializers import CopiedFieldsMixin, named_keys


class TaskInterrupted(Exception):
    """The task stopped being ``running`` (cancelled, expired, rescued): stop working on it."""


class TransientError(Exception):
    """A failure that may pass (a server answering 5xx): a type that lists it in
    ``transient_errors`` has the run tried again later, with backoff."""


class JobContext:
    """What a handler may do besides computing: report progress (which is also a heartbeat),
    know which task it runs, for whom and in which attempt (``task_id``, ``owner_id``,
    ``attempt``: each run of a task has its own), check that the run is still the task's
    (``still_running``) before it makes something that outlives it, and say how to undo it
    (``made``)."""

    def __init__(
        self,
        report: Callable[[int], bool],
        *,
        task_id=None,
        owner_id=None,
        attempt: int | None = None,
        alive: Callable[[], bool] | None = None,
        made: Callable[[Callable[[], None]], None] | None = None,
    ):
        self._report = report
        self._alive = alive
        self._made = made
        self.task_id = task_id
        self.owner_id = owner_id
        self.attempt = attempt

    def progress(self, percent: int) -> None:
        """Record progress; raises ``TaskInterrupted`` when the task is no longer running."""
        if not self._report(max(0, min(100, int(percent)))):
            raise TaskInterrupted()

    def made(self, undo: Callable[[], None]) -> None:
        """Tell the run it made something for the result (a report's file): ``undo`` is
        called when that result is not recorded (the task cancelled or past its deadline
        meanwhile, or the run failing after), so nothing is left that no task names."""
        if self._made is not None:
            self._made(undo)

    def still_running(self) -> None:
        """Raises ``TaskInterrupted`` when the task is no longer this run's (cancelled,
        expired, rescued). Called in a transaction, the check (a guarded UPDATE of the task's
        row) holds the row until it ends: no cancel or retry comes between the two."""
        if self._alive is not None and not self._alive():
            raise TaskInterrupted()


Handler = Callable[[dict, JobContext], Any]

# Worker queues: short jobs never wait behind long ones (each queue has its own worker
# processes under `make run`, the Procfile and compose).
QUEUE_SHORT = "tasks"
QUEUE_LONG = "long"


@dataclass(frozen=True)
class TaskType:
    name: str
    description: str
    input_serializer: type[serializers.Serializer]
    # None: a human task, never run by a worker.
    handler: Handler | None = None
    # Hard time limit in seconds for one run; a function of the input when it depends on it.
    time_limit: int | Callable[[dict], int] = 60
    # Runs allowed before a lost task is failed instead of being run again.
    max_attempts: int = 3
    # The worker queue: QUEUE_LONG for types that may run for many seconds.
    queue: str = QUEUE_SHORT
    # Errors that may pass: the runner puts the task back to ``scheduled`` with a later
    # ``run_at`` (exponential backoff with jitter) until ``max_attempts`` runs are spent.
    transient_errors: tuple[type[BaseException], ...] = ()
    # Errors the handler raises on purpose to fail the task with a message its owner can read
    # (a mail that cannot be sent, a refused URL, a malformed CSV): the task's own outcome, not
    # a bug, so the worker logs it as one WARNING line. Any other error is logged at ERROR with
    # its traceback. Either way the task's ``error`` is the same.
    expected_errors: tuple[type[BaseException], ...] = ()
    # A valid input, shown as this type's named example of ``POST /api/tasks/`` in the API
    # documentation: it must create a task as-is for a new user (tests post every example).
    example: dict | None = None
    # What the example does, in a few words; for a type whose example refers to an object
    # that must exist first (a file), what to do before running it.
    example_summary: str = ""
    # True when the example names such an object and so cannot succeed as-is.
    example_needs_setup: bool = False
    # A pure computation over the input that takes milliseconds, reports no progress and
    # fails for good: the worker runs the handler on the input its message carries (or on
    # the pending task it reads) and records the outcome in one guarded UPDATE (pending →
    # completed or failed, ``started_at`` set), instead of a claim (→ running) and then an
    # outcome: one row version written per run instead of two. Nothing holds such a task
    # ``running``, so there is nothing to rescue. Its handler is not told the owner.
    instant: bool = False
    # The input keys that hold the id of one of the owner's files: the create locks those
    # rows while it writes the task, so a delete of the file cannot slip in between the
    # input's check and the task's row (the delete then sees the task and answers 409).
    file_inputs: tuple[str, ...] = ()

    def __post_init__(self):
        if self.instant and (
            self.handler is None or self.transient_errors or self.queue != QUEUE_SHORT
        ):
            raise ValueError(
                f"task type {self.name!r}: an instant type has a handler, runs on the short "
                "queue and has no transient errors (it is never tried again)"
            )

    @property
    def runs_on_worker(self) -> bool:
        return self.handler is not None

    def time_limit_for(self, input_data: dict) -> int:
        limit = self.time_limit(input_data) if callable(self.time_limit) else self.time_limit
        return int(limit)

    def input_for(
        self, data, *, owner, task: dict, context: dict | None = None
    ) -> serializers.Serializer:
        """This type's input serializer over ``data`` for a task of ``owner``'s: inputs that
        name the owner's objects (a file) check they are theirs, and ``task`` (its ``name``
        and ``description``) is what some inputs default to (an email's subject)."""
        return self.input_serializer(
            data=data, context={**(context or {}), "owner": owner, "task": task}
        )

    def input_schema(self) -> dict:
        return serializer_json_schema(self.input_serializer())


_REGISTRY: dict[str, TaskType] = {}


def register(task_type: TaskType) -> TaskType:
    if task_type.name in _REGISTRY:
        raise ValueError(f"Task type {task_type.name!r} is registered twice")
    _REGISTRY[task_type.name] = task_type
    return task_type


def get(name: str) -> TaskType:
    """The type of that name; a 409 ``unknown_task_type`` for a task whose type this service
    no longer has (its module removed, rows of it left): a retry of one was a 500."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise Conflict(
            f"This service no longer runs tasks of type {name!r}.", code="unknown_task_type"
        ) from None


def find(name: str) -> TaskType | None:
    return _REGISTRY.get(name)


def all_types() -> list[TaskType]:
    return sorted(_REGISTRY.values(), key=lambda t: t.name)


def names() -> list[str]:
    return sorted(_REGISTRY)


def worker_type_names() -> list[str]:
    return sorted(name for name, t in _REGISTRY.items() if t.runs_on_worker)


# --- strict input fields: JSON types are not coerced ------------------------------------


class StrictInputSerializer(CopiedFieldsMixin, serializers.Serializer):
    """Rejects keys it does not know, so a typo is a 400 and not a silently ignored value."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["Expected a JSON object."]}, code="invalid"
            )
        unknown = set(data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(named_keys(unknown, lambda key: "Unknown field."))
        return super().to_internal_value(data)


# From here on a float's JSON has an exponent (1e+16), which PostgreSQL's jsonb stores, and
# gives back, as the whole number's digits: an integer when read again.
EXPONENT_FORM = 1e16


class StrictNumberField(serializers.Field):
    """A JSON number. One of 1e16 or more (each a whole number) is taken as the integer its
    JSON writes (1e23: 10**23): the same number whether a run reads its input from its
    message or from the database, where jsonb turns it into that integer (and a sum of
    integers is exact)."""

    default_error_messages = {"invalid": "A number is required (not a string or a boolean)."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if isinstance(data, float) and abs(data) >= EXPONENT_FORM:
            # As jsonb reads the float's JSON (1e+23: 10**23, not the double's 99999…392).
            return int(Decimal(repr(data)))
        return data

    def to_representation(self, value):
        return value

    def json_schema(self) -> dict:
        return {"type": "number"}


# Beyond 2**53 a float is no longer every whole number there (9007199254740993.0 is read as
# …992): such a one is refused rather than taken as another number.
WHOLE_FLOATS = 2**53


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: as JSON Schema's "integer" (what the task types' schemas publish), a
    number with no fraction is one (``5.0``), which some JSON encoders write for a whole
    number. ``max_value`` may be a callable, read at each use (e.g. a setting)."""

    default_error_messages = {
        "invalid": "An integer is required (not a string, a boolean or a fraction)."
    }

    def __init__(self, *, max_value=None, **kwargs):
        self.dynamic_max = max_value if callable(max_value) else None
        super().__init__(max_value=None if callable(max_value) else max_value, **kwargs)

    def current_max(self) -> int | None:
        return self.dynamic_max() if self.dynamic_max else self.max_value

    def get_value(self, dictionary):
        """A JSON body gives an integer or nothing else; an HTML form (the browsable API)
        gives text: there, whole decimal digits are the integer, and an empty box is no
        value (null when allowed)."""
        value = super().get_value(dictionary)
        if html.is_html_input(dictionary) and isinstance(value, str):
            text = value.strip()
            if not text:
                return None if self.allow_null else empty
            if re.fullmatch(r"[+-]?[0-9]{1,30}", text):  # longer: refused as not an integer
                return int(text)
        return value

    def to_internal_value(self, data):
        if isinstance(data, float) and data.is_integer():
            if abs(data) > WHOLE_FLOATS:  # said as the bound it passes, when there is one
                maximum, minimum = self.current_max(), self.min_value
                if maximum is not None and data > maximum:
                    self.fail("max_value", max_value=maximum)
                if minimum is not None and data < minimum:
                    self.fail("min_value", min_value=minimum)
                self.fail("invalid")
            data = int(data)
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        value = super().to_internal_value(data)
        maximum = self.current_max()
        if maximum is not None and value > maximum:
            self.fail("max_value", max_value=maximum)
        return value

    def json_schema(self) -> dict:
        schema = {"type": "integer"}
        if self.min_value is not None:
            schema["minimum"] = self.min_value
        if self.current_max() is not None:
            schema["maximum"] = self.current_max()
        return schema


class StrictStringField(serializers.CharField):
    """A JSON string of at most ``max_bytes`` bytes of UTF-8; blank allowed, kept as given."""

    default_error_messages = {
        "invalid": "A string is required.",
        "too_large": "At most {max_bytes} bytes of UTF-8 are allowed.",
    }

    def __init__(self, *, max_bytes: int, **kwargs):
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        self.max_bytes = max_bytes

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        if len(data) > self.max_bytes or len(data.encode("utf-8")) > self.max_bytes:
            self.fail("too_large", max_bytes=self.max_bytes)
        return data

    def json_schema(self) -> dict:
        schema = {"type": "string", "description": f"at most {self.max_bytes} bytes of UTF-8"}
        if not self.allow_blank:
            schema["minLength"] = 1
        return schema


def _field_schema(field: serializers.Field) -> dict:
    if hasattr(field, "json_schema"):
        schema = field.json_schema()
    elif isinstance(field, serializers.ListField):
        schema = {"type": "array", "items": _field_schema(field.child)}
        if field.min_length is not None:
            schema["minItems"] = field.min_length
        if field.max_length is not None:
            schema["maxItems"] = field.max_length
        if not field.allow_empty:
            schema["minItems"] = max(1, schema.get("minItems", 1))
    elif isinstance(field, serializers.ChoiceField):
        schema = {"enum": list(field.choices)}
    elif isinstance(field, serializers.BooleanField):
        schema = {"type": "boolean"}
    elif isinstance(field, serializers.DictField):
        schema = {"type": "object"}
    elif isinstance(field, serializers.JSONField):
        schema = {}  # any JSON value
    else:
        schema = {"type": "string"}
    if field.help_text:
        schema["description"] = str(field.help_text)
    if field.default is not empty and not callable(field.default):
        schema.setdefault("default", field.default)  # what a left-out key is taken as
    return schema


def serializer_json_schema(serializer: serializers.Serializer) -> dict:
    """A JSON schema of a type's input, for ``GET /api/task-types/``."""
    fields = serializer.fields
    schema = {
        "type": "object",
        "properties": {name: _field_schema(field) for name, field in fields.items()},
        "additionalProperties": False,
    }
    required = [name for name, field in fields.items() if field.required]
    if required:  # an empty list is not valid in OpenAPI 3.0
        schema["required"] = required
    return schema

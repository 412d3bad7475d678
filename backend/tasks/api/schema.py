"""The OpenAPI schema as a guide to creating tasks, built from the task-type registry: a named
example of ``POST /api/tasks/`` per type (``sum`` first), and ``input_data`` described as
one of the types' input schemas. A new type module brings both with it."""

from __future__ import annotations

import json

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema

from backend.tasks import types

# Swagger UI and ReDoc show the first example by default: the simplest types lead.
LEADING_EXAMPLES = ("sum", "countdown", "reverse")
CREATE_ACTIONS = {"create", "create_alias"}

INPUT_DATA_DESCRIPTION = (
    "The task's input: a JSON object whose fields depend on `task_type`. It must match the "
    "schema below titled with that type (`GET /api/task-types/` lists the same schemas)."
)


def example_kinds() -> list[types.TaskType]:
    """Every type that has an example: the leading ones, then by name, those whose example
    needs an object created first at the end."""
    kinds = [kind for kind in types.all_types() if kind.example is not None]
    lead = {name: rank for rank, name in enumerate(LEADING_EXAMPLES)}
    return sorted(
        kinds,
        key=lambda kind: (lead.get(kind.name, len(lead)), kind.example_needs_setup, kind.name),
    )


def create_example(kind: types.TaskType) -> dict:
    """The request body of ``POST /api/tasks/`` for this type's example."""
    return {
        "task_type": kind.name,
        "name": f"My {kind.name} task",
        "input_data": kind.example,
    }


def create_examples() -> dict:
    """OpenAPI ``examples`` of a media type: one per task type, keyed by the type's name."""
    examples = {}
    for kind in example_kinds():
        summary = kind.example_summary or kind.description
        examples[kind.name] = {
            "summary": f"{kind.name}: {summary}",
            "description": kind.description,
            "value": create_example(kind),
        }
    return examples


def input_data_schema() -> dict:
    """``anyOf`` the registry's input schemas, not ``oneOf``: an input may fit more than one
    type's schema (``{}`` is a ``manual`` task's input and an ``email`` task's that takes
    every default), and ``oneOf`` refuses an input that matches two entries; the entry
    titled with the ``task_type`` is the one that applies. Types that take the same input
    (the text types) share one entry titled with all their names."""
    groups: dict[str, list[types.TaskType]] = {}
    order = {kind.name: index for index, kind in enumerate(example_kinds())}
    kinds = sorted(
        types.all_types(), key=lambda kind: (order.get(kind.name, len(order)), kind.name)
    )
    for kind in kinds:
        groups.setdefault(json.dumps(kind.input_schema(), sort_keys=True), []).append(kind)
    entries = []
    for schema_text, members in groups.items():
        entry = json.loads(schema_text)
        entry["title"] = ", ".join(kind.name for kind in members)
        entry["description"] = " ".join(f"{kind.name}: {kind.description}" for kind in members)
        entries.append(entry)
    return {"description": INPUT_DATA_DESCRIPTION, "anyOf": entries}


class TaskInputFieldExtension(OpenApiSerializerFieldExtension):
    """``input_data`` of task creation (and of schedule templates, which reuse it)."""

    target_class = "backend.tasks.api.serializers.TaskInputField"

    def map_serializer_field(self, auto_schema, direction):
        return input_data_schema()


class TaskSchema(AutoSchema):
    """Adds the per-type examples to the task-creation operations.

    drf-spectacular would rename ``OpenApiExample`` keys (``count_words`` → ``CountWords``);
    the examples are keyed by the type's name instead, as the user types it."""

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation and method == "POST" and getattr(self.view, "action", None) in CREATE_ACTIONS:
            for media in operation.get("requestBody", {}).get("content", {}).values():
                media["examples"] = create_examples()
        return operation

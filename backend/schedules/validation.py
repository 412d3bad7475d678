"""A schedule's task template is validated by the code that validates ``POST /api/tasks/``
(``TaskCreateSerializer`` and the type registry's input serializers): one set of rules."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from backend.tasks.api.serializers import TaskCreateSerializer
from backend.users.models import User

TEMPLATE_FIELDS = ("task_type", "input_data", "name", "description", "priority")


def template_context(owner: User, request=None) -> dict[str, Any]:
    """The serializer context of a create by ``owner``: the request when there is one, or a
    stand-in carrying the owner (beat's firings have no request)."""
    return {"request": request or SimpleNamespace(user=owner), "owner": owner}


def validate_template(
    template: dict[str, Any], *, owner: User
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(validated template, None)`` or ``({}, field errors)``."""
    serializer = TaskCreateSerializer(data=template, context=template_context(owner))
    if not serializer.is_valid():
        return {}, serializer.errors
    return {field: serializer.validated_data[field] for field in TEMPLATE_FIELDS}, None

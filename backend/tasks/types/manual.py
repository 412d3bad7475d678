"""``manual``: a human work item, started and completed by its assignee, never run by a worker."""

from .base import StrictInputSerializer, TaskType, register


class ManualInput(StrictInputSerializer):
    """No input: what to do goes in the task's name and description."""


register(
    TaskType(
        name="manual",
        description="A work item for a person: the assignee starts it and completes it, "
        "optionally with a result. Never run by a worker.",
        input_serializer=ManualInput,
        handler=None,
        example={},
        example_summary="A to-do for a person (you): start it, then complete it with its actions",
    )
)

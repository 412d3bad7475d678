"""Schedules made through the service, so each has its periodic task as in production."""

from backend.schedules import services
from backend.schedules.models import Schedule
from backend.users.tests.factories import UserFactory


def make_schedule(owner=None, **fields) -> Schedule:
    fields.setdefault("task_type", "sum")
    fields.setdefault("input_data", {"numbers": [1, 2, 3]})
    if "crontab" not in fields:
        fields.setdefault("interval_seconds", 300)
    return services.schedule_create(owner=owner or UserFactory(), **fields)

"""Numbers and time: ``sum`` and ``countdown``."""

import math
import sys
import time

from django.conf import settings
from rest_framework import serializers

from backend.common.serializers import BoundedListField

from .base import (
    QUEUE_LONG,
    JobContext,
    StrictInputSerializer,
    StrictIntegerField,
    StrictNumberField,
    TaskType,
    register,
)

MAX_NUMBERS = 10_000


class SumTooLarge(ValueError):
    """The sum is past the largest double (an exact integer sum of numbers near 1e308
    too): a JSON client reading it as a double would get Infinity."""


def _total(numbers: list) -> int | float:
    total = sum(numbers)
    if (isinstance(total, float) and not math.isfinite(total)) or abs(total) > sys.float_info.max:
        raise SumTooLarge("the sum is too large to represent")
    return total


class SumInput(StrictInputSerializer):
    numbers = BoundedListField(
        child=StrictNumberField(),
        allow_empty=False,
        max_length=MAX_NUMBERS,
        help_text=f"1 to {MAX_NUMBERS} numbers (booleans are not numbers) whose sum a "
        "double holds (at most about 1.8e308 either way)",
    )

    def validate_numbers(self, numbers: list) -> list:
        """Numbers whose sum cannot be represented are refused here (400), not accepted
        for a run that can only fail."""
        try:
            _total(numbers)
        except SumTooLarge as exc:
            raise serializers.ValidationError(
                "The sum of these numbers is too large to represent (past about 1.8e308)."
            ) from exc
        return numbers


def run_sum(data: dict, ctx: JobContext) -> dict:
    return {"result": _total(data["numbers"])}


class CountdownInput(StrictInputSerializer):
    seconds = StrictIntegerField(
        min_value=1,
        max_value=lambda: settings.COUNTDOWN_MAX_SECONDS,
        help_text="whole seconds to count down (at most COUNTDOWN_MAX_SECONDS)",
    )


def run_countdown(data: dict, ctx: JobContext) -> dict:
    seconds = data["seconds"]
    started = time.monotonic()
    for elapsed in range(1, seconds + 1):
        # Sleep to the next whole second since the start, so reporting does not add drift.
        time.sleep(max(0.0, started + elapsed - time.monotonic()))
        ctx.progress(elapsed * 100 // seconds)
    return {"message": "Countdown finished", "seconds": seconds}


register(
    TaskType(
        name="sum",
        description="Adds up a list of numbers.",
        input_serializer=SumInput,
        handler=run_sum,
        time_limit=30,
        instant=True,
        # Refused at create; a row written otherwise (the admin) fails readably.
        expected_errors=(SumTooLarge,),
        example={"numbers": [1, 2, 3.5]},
        example_summary="Add up 1, 2 and 3.5",
    )
)

register(
    TaskType(
        name="countdown",
        description="Waits the given number of seconds, reporting progress every second; "
        "stops early when cancelled or past its deadline.",
        input_serializer=CountdownInput,
        handler=run_countdown,
        time_limit=lambda data: int(data.get("seconds", 0)) + 30,
        queue=QUEUE_LONG,
        example={"seconds": 5},
        example_summary="Count down five seconds (follow its progress on the task)",
    )
)

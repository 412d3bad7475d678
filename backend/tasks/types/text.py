"""Text operations on a string of at most 1 MB."""

from .base import JobContext, StrictInputSerializer, StrictStringField, TaskType, register

MAX_TEXT_BYTES = 1024 * 1024


class TextInput(StrictInputSerializer):
    data = StrictStringField(max_bytes=MAX_TEXT_BYTES, help_text="the text (at most 1 MB)")


EXAMPLE_TEXT = "Hello, world"


def _text_type(name: str, description: str, operation, summary: str) -> TaskType:
    def handler(data: dict, ctx: JobContext) -> dict:
        return {"result": operation(data["data"])}

    return register(
        TaskType(
            name=name,
            description=description,
            input_serializer=TextInput,
            handler=handler,
            time_limit=30,
            instant=True,
            example={"data": EXAMPLE_TEXT},
            example_summary=summary,
        )
    )


_text_type("reverse", "Reverses a string.", lambda text: text[::-1], f"Reverse {EXAMPLE_TEXT!r}")
_text_type(
    "uppercase",
    "Converts a string to upper case.",
    str.upper,
    f"Put {EXAMPLE_TEXT!r} in upper case",
)
_text_type(
    "lowercase",
    "Converts a string to lower case.",
    str.lower,
    f"Put {EXAMPLE_TEXT!r} in lower case",
)
_text_type(
    "count_words",
    "Counts the words (runs of non-space characters) in a string.",
    lambda text: len(text.split()),
    f"Count the words of {EXAMPLE_TEXT!r}",
)
_text_type(
    "count_letters",
    "Counts the alphabetic characters in a string.",
    lambda text: sum(1 for ch in text if ch.isalpha()),
    f"Count the letters of {EXAMPLE_TEXT!r}",
)

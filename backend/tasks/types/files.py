"""Task types that read or write files: ``data_processing`` and ``report_generation``."""

import uuid

from rest_framework import serializers

from backend.files import reports, selectors, services
from backend.files.csvstats import ColumnTooLarge, MalformedCSV, csv_statistics
from backend.files.models import File

from .base import QUEUE_LONG, JobContext, StrictInputSerializer, TaskType, register


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "true or false is required (not a string or a number)."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data

    def json_schema(self) -> dict:
        return {"type": "boolean"}


class OwnFileField(serializers.Field):
    """The id of a file that belongs to the task's owner (``owner`` in the context);
    stored as its canonical string."""

    default_error_messages = {
        "invalid": "A file id (uuid string) is required.",
        "not_found": "No file of yours has this id.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            file_id = uuid.UUID(data)
        except ValueError:
            self.fail("invalid")
        owner = self.context.get("owner")
        files = File.objects.filter(pk=file_id)
        if owner is not None:
            files = files.filter(owner_id=owner.pk)
        if not files.exists():
            self.fail("not_found")
        return str(file_id)

    def to_representation(self, value):
        return value

    def json_schema(self) -> dict:
        return {"type": "string", "format": "uuid", "description": "the id of one of your files"}


class DelimiterField(serializers.CharField):
    default_error_messages = {"invalid": "One character other than a quote or a line break."}

    def __init__(self, **kwargs):
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str) or len(data) != 1 or data in '"\r\n':
            self.fail("invalid")
        return data

    def json_schema(self) -> dict:
        return {"type": "string", "minLength": 1, "maxLength": 1, "default": ","}


class DataProcessingInput(StrictInputSerializer):
    file_id = OwnFileField(help_text="a CSV file of yours (UTF-8; a BOM is tolerated)")
    delimiter = DelimiterField(required=False, default=",", help_text="one character")
    has_header = StrictBooleanField(
        required=False, default=True, help_text="the first row names the columns"
    )


def run_data_processing(data: dict, ctx: JobContext) -> dict:
    file = selectors.file_of_owner(data["file_id"], ctx.owner_id)
    if file is None:
        raise LookupError("the file no longer exists (it was deleted)")
    with services.file_open(file) as source:
        return csv_statistics(
            source,
            size=file.size,
            delimiter=data.get("delimiter", ","),
            has_header=data.get("has_header", True),
            progress=ctx.progress,
        )


def data_processing_time_limit(data: dict) -> int:
    """Two minutes, plus a second per 256 KB of the file (at most an hour)."""
    size = File.objects.filter(pk=data.get("file_id")).values_list("size", flat=True).first()
    return min(3600, 120 + (size or 0) // (256 * 1024))


class ReportInput(StrictInputSerializer):
    report = serializers.ChoiceField(
        choices=reports.REPORTS,
        help_text="task_summary (counts by status and type, p50/p95 run time per type) or "
        "tasks_export (every task of yours as a row)",
    )
    format = serializers.ChoiceField(choices=reports.FORMATS, help_text="csv or json")


def run_report_generation(data: dict, ctx: JobContext) -> dict:
    return reports.generate_report(
        owner_id=ctx.owner_id,
        report=data["report"],
        fmt=data["format"],
        progress=ctx.progress,
        task_id=ctx.task_id,
        attempt=ctx.attempt,
        still_running=ctx.still_running,
        made=ctx.made,
    )


register(
    TaskType(
        name="data_processing",
        description="Per-column statistics of one of your CSV files (rows; count, empty cells, "
        "and count/sum/mean/min/max of the numbers), streamed in constant memory.",
        input_serializer=DataProcessingInput,
        handler=run_data_processing,
        time_limit=data_processing_time_limit,
        queue=QUEUE_LONG,
        # The task's error names the line, or the column, at fault: one WARNING line in the
        # worker's log, not a traceback.
        expected_errors=(MalformedCSV, ColumnTooLarge),
        file_inputs=("file_id",),
        example={
            "file_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "delimiter": ",",
            "has_header": True,
        },
        example_summary="Statistics of a CSV file: first upload one (POST /api/files/) "
        "and put its id in file_id",
        example_needs_setup=True,
    )
)

register(
    TaskType(
        name="report_generation",
        description="Writes a report on your tasks (task_summary or tasks_export, as csv or "
        "json) to a new file of yours; the result holds its file_id and download_url.",
        input_serializer=ReportInput,
        handler=run_report_generation,
        time_limit=900,
        queue=QUEUE_LONG,
        # A full storage: tried again later with backoff (room may be made meanwhile), one
        # line in the worker's log.
        transient_errors=(services.StorageFull,),
        expected_errors=(services.StorageFull,),
        example={"report": "task_summary", "format": "json"},
        example_summary="A summary of your tasks as a JSON file (see the result's download_url)",
    )
)

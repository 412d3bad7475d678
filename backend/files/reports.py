"""Reports on a user's tasks, written to the storage as a File of theirs by streaming:
rows are encoded a few at a time and handed on in chunks, never built whole in memory."""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import partial

from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from backend.tasks.models import Task, TaskStatus

from . import services

REPORTS = ("task_summary", "tasks_export")
FORMATS = ("csv", "json")
# What the report's bytes are: UTF-8 (a CSV said nothing, and was read as Latin-1 or as the
# system's code page; JSON is UTF-8 by its definition, RFC 8259).
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
CHUNK_CHARS = 64 * 1024

EXPORT_FIELDS = (
    "id",
    "name",
    "description",
    "task_type",
    "status",
    "priority",
    "progress",
    "attempts",
    "assignee",
    "deadline",
    "run_at",
    "created_at",
    "started_at",
    "completed_at",
    "error",
)
_EXPORT_COLUMNS = (
    "id",
    "name",
    "description",
    "task_type",
    "status",
    "priority",
    "progress",
    "attempts",
    "assignee__username",
    "deadline",
    "run_at",
    "created_at",
    "started_at",
    "completed_at",
    "error",
)
SUMMARY_FIELDS = (
    "task_type",
    "total",
    *TaskStatus.values,
    "p50_run_seconds",
    "p95_run_seconds",
)

Progress = Callable[[int], None]


def _plain(value):
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_values[max(0, math.ceil(pct / 100 * len(sorted_values)) - 1)]


# --- the reports' rows ----------------------------------------------------------------------


def task_summary_rows(owner_id) -> list[dict]:
    """One row per task type: counts by status, and p50/p95 run time (started → completed)
    of its completed tasks, in seconds."""
    owned = Task.objects.filter(owner_id=owner_id)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TaskStatus.values, 0))
    for row in owned.values("task_type", "status").annotate(n=Count("pk")).order_by():
        counts[row["task_type"]][row["status"]] = row["n"]
    durations: dict[str, list[float]] = defaultdict(list)
    finished = owned.filter(
        status=TaskStatus.COMPLETED, started_at__isnull=False, completed_at__isnull=False
    ).values_list("task_type", "started_at", "completed_at")
    for task_type, started, completed in finished.iterator(chunk_size=5000):
        durations[task_type].append(max(0.0, (completed - started).total_seconds()))
    rows = []
    for task_type in sorted(counts):
        runs = sorted(durations.get(task_type, []))
        by_status = counts[task_type]
        rows.append(
            {
                "task_type": task_type,
                "total": sum(by_status.values()),
                **by_status,
                "p50_run_seconds": round(percentile(runs, 50), 3) if runs else None,
                "p95_run_seconds": round(percentile(runs, 95), 3) if runs else None,
            }
        )
    return rows


EXPORT_PAGE = 2000  # tasks read by one query of tasks_export_rows
_CREATED, _ID = _EXPORT_COLUMNS.index("created_at"), _EXPORT_COLUMNS.index("id")


def tasks_export_rows(owner_id, progress: Progress | None = None) -> tuple[int, Iterator[dict]]:
    """``(count, rows)``: every task of the owner, oldest first, read ``EXPORT_PAGE`` at a
    time, each page a query of its own that is over before the rows are handed on: the run
    records its progress between them on the same connection. (One query read in chunks
    kept a statement open meanwhile: on SQLite, once another connection had committed, the
    progress write was refused, "database is locked", and the run's closing of that
    connection failed the export, "Cannot operate on a closed database".) The pages follow
    the owner's index on (created_at descending, id) backwards: oldest first, and among
    tasks created in the same microsecond, the greater id first."""
    owned = Task.objects.filter(owner_id=owner_id)
    total = owned.count()
    ordered = owned.order_by("created_at", "-id").values_list(*_EXPORT_COLUMNS)

    def rows() -> Iterator[dict]:
        reported = done = 0
        page = list(ordered[:EXPORT_PAGE])
        while page:
            for row in page:
                yield {f: _plain(value) for f, value in zip(EXPORT_FIELDS, row, strict=True)}
                done += 1
                if progress is not None:
                    percent = min(99, done * 100 // max(total, 1))
                    if percent > reported:
                        reported = percent
                        progress(percent)
            if len(page) < EXPORT_PAGE:
                return
            created, pk = page[-1][_CREATED], page[-1][_ID]
            after = ordered.filter(created_at__gte=created).exclude(created_at=created, id__gte=pk)
            page = list(after[:EXPORT_PAGE])

    return total, rows()


# --- encoders: rows in, chunks of bytes out -------------------------------------------------


# A spreadsheet reads a cell starting with one of these as a formula (a task named
# =HYPERLINK(...) would become a link): such a text starts with ' in a CSV report, which
# the spreadsheet shows as text (OWASP's advice on CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _as_text(value):
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def csv_chunks(fields: Iterable[str], rows: Iterable[dict]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({field: _as_text(value) for field, value in row.items()})
        if buffer.tell() >= CHUNK_CHARS:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def json_chunks(rows: Iterable[dict]) -> Iterator[bytes]:
    """A JSON array of objects, one per line."""
    parts = ["["]
    size = 1
    separator = "\n"
    for row in rows:
        text = separator + json.dumps(row, ensure_ascii=False, allow_nan=False)
        separator = ",\n"
        parts.append(text)
        size += len(text)
        if size >= CHUNK_CHARS:
            yield "".join(parts).encode()
            parts, size = [], 0
    parts.append("\n]\n")
    yield "".join(parts).encode()


# --- the job --------------------------------------------------------------------------------


def generate_report(
    *,
    owner_id,
    report: str,
    fmt: str,
    progress: Progress | None = None,
    task_id=None,
    attempt: int | None = None,
    still_running: Callable[[], None] | None = None,
    made: Callable[[Callable[[], None]], None] | None = None,
) -> dict:
    """Write the report as a File of ``owner_id``; ``{"file_id", "download_url", "rows"}``.
    With ``task_id``, the file's id is the task's (``file_id_of_task``): a run again after a
    lost one replaces what that one left. ``attempt`` and ``still_running``: the run's, see
    ``services.file_store``; ``made`` is told how to remove the file again (the run's
    result not recorded)."""
    if report == "task_summary":
        rows_list = task_summary_rows(owner_id)
        rows, fields = iter(rows_list), SUMMARY_FIELDS
    elif report == "tasks_export":
        _, rows = tasks_export_rows(owner_id, progress)
        fields = EXPORT_FIELDS
    else:
        raise ValueError(f"unknown report {report!r}")
    written = 0

    def counted(source: Iterator[dict]) -> Iterator[dict]:
        nonlocal written
        for row in source:
            written += 1
            yield row

    rows = counted(rows)
    chunks = csv_chunks(fields, rows) if fmt == "csv" else json_chunks(rows)
    name = f"{report}-{timezone.now():%Y%m%d-%H%M%S}.{fmt}"
    file = services.file_store(
        owner_id=owner_id,
        name=name,
        chunks=chunks,
        content_type=CONTENT_TYPES[fmt],
        file_id=services.file_id_of_task(task_id) if task_id is not None else None,
        attempt=attempt,
        still_running=still_running,
    )
    if made is not None:
        made(partial(services.file_discard, file_id=file.pk, storage_name=file.storage_name))
    return {
        "file_id": str(file.pk),
        "download_url": reverse("file-download", args=[file.pk]),
        "rows": written,
    }

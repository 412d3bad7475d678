"""``data_processing`` and ``report_generation``: input checked at create time (the file
must be the owner's), and run in-process as a worker runs them."""

import csv
import io
import json
import threading
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone

from backend.files import reports
from backend.files.models import File
from backend.files.reports import EXPORT_FIELDS, SUMMARY_FIELDS, percentile
from backend.tasks import jobs, types
from backend.tasks.models import Task, TaskStatus
from backend.tasks.tests.factories import TaskFactory

from .conftest import stored_files
from .factories import make_file

pytestmark = pytest.mark.django_db

CSV = b'\xef\xbb\xbfcity,temp\r\n"Paris, FR",12.5\r\nOslo,-3\r\nRome,\r\n'


@pytest.fixture
def client(client_for, user):
    return client_for(user)


def report_task(user, report: str, fmt: str, **fields) -> Task:
    return TaskFactory(
        owner=user,
        task_type="report_generation",
        input_data={"report": report, "format": fmt},
        **fields,
    )


def create(client, task_type: str, input_data) -> "object":
    return client.post(
        "/api/tasks/", {"task_type": task_type, "input_data": input_data}, format="json"
    )


def run(task: Task) -> Task:
    jobs.run_task(str(task.pk))
    task.refresh_from_db()
    return task


# --- data_processing: input -----------------------------------------------------------------


def test_data_processing_is_created_for_an_own_file(client, user):
    file = make_file(user, content=CSV)
    response = create(client, "data_processing", {"file_id": str(file.pk).upper()})
    assert response.status_code == 201, response.content
    assert response.json()["input_data"] == {
        "file_id": str(file.pk),
        "delimiter": ",",
        "has_header": True,
    }


@pytest.mark.parametrize(
    "input_data",
    [
        {},
        {"file_id": "00000000-0000-0000-0000-000000000000"},
        {"file_id": "not-a-uuid"},
        {"file_id": 5},
        {"file_id": "{own}", "delimiter": ";;"},
        {"file_id": "{own}", "delimiter": '"'},
        {"file_id": "{own}", "delimiter": "\n"},
        {"file_id": "{own}", "has_header": "yes"},
        {"file_id": "{own}", "has_header": 1},
        {"file_id": "{own}", "sheet": 1},
    ],
)
def test_data_processing_input_is_checked(client, user, input_data):
    own = make_file(user)
    data = {k: (str(own.pk) if v == "{own}" else v) for k, v in input_data.items()}
    response = create(client, "data_processing", data)
    assert response.status_code == 400, response.content
    assert "input_data" in response.json()
    assert Task.objects.count() == 0


def test_another_users_file_cannot_be_processed(client, other_user):
    theirs = make_file(other_user)
    response = create(client, "data_processing", {"file_id": str(theirs.pk)})
    assert response.status_code == 400
    assert response.json()["input_data"]["file_id"] == ["No file of yours has this id."]


def test_the_owner_reaches_the_input_serializer_through_the_create_context(user, other_user):
    from backend.tasks.api.serializers import TaskCreateSerializer

    file = make_file(user)
    data = {"task_type": "data_processing", "input_data": {"file_id": str(file.pk)}}
    assert TaskCreateSerializer(data=data, context={"owner": user}).is_valid()
    assert not TaskCreateSerializer(data=data, context={"owner": other_user}).is_valid()


# --- data_processing: run -------------------------------------------------------------------


def test_data_processing_computes_the_statistics(user):
    file = make_file(user, content=CSV)
    task = run(
        TaskFactory(owner=user, task_type="data_processing", input_data={"file_id": str(file.pk)})
    )
    assert task.status == TaskStatus.COMPLETED, task.error
    assert task.result == {
        "rows": 3,
        "columns": [
            {"name": "city", "count": 3, "empty": 0, "numeric": None},
            {
                "name": "temp",
                "count": 2,
                "empty": 1,
                "numeric": {"count": 2, "sum": 9.5, "mean": 4.75, "min": -3, "max": 12.5},
            },
        ],
    }


def test_data_processing_options(user):
    file = make_file(user, content=b"1|2\n3|4\n")
    task = TaskFactory(
        owner=user,
        task_type="data_processing",
        input_data={"file_id": str(file.pk), "delimiter": "|", "has_header": False},
    )
    task = run(task)
    assert task.result["rows"] == 2
    assert task.result["columns"][1]["numeric"]["sum"] == 6


def test_a_malformed_csv_fails_the_task_with_the_line(user):
    file = make_file(user, content=b"a,b\n1,2\n3,4,5\n")
    task = run(
        TaskFactory(owner=user, task_type="data_processing", input_data={"file_id": str(file.pk)})
    )
    assert task.status == TaskStatus.FAILED
    assert task.error == "MalformedCSV: line 3: 3 field(s), expected 2 as in the header"


def test_a_file_deleted_before_the_run_fails_the_task_readably(user):
    file = make_file(user)
    task = TaskFactory(
        owner=user, task_type="data_processing", input_data={"file_id": str(file.pk)}
    )
    File.objects.filter(pk=file.pk).delete()
    task = run(task)
    assert task.status == TaskStatus.FAILED and "no longer exists" in task.error


def test_a_file_whose_bytes_are_gone_fails_the_task_without_the_storage_path(user):
    file = make_file(user)
    default_storage.delete(file.storage_name)
    task = run(
        TaskFactory(owner=user, task_type="data_processing", input_data={"file_id": str(file.pk)})
    )
    assert task.status == TaskStatus.FAILED
    assert task.error == (
        "FileMissing: the file's bytes are missing from the storage; upload it again"
    )


def test_a_file_of_someone_else_is_not_read_at_run_time(user, other_user):
    theirs = make_file(other_user)
    task = TaskFactory(
        owner=user, task_type="data_processing", input_data={"file_id": str(theirs.pk)}
    )
    assert run(task).status == TaskStatus.FAILED


def test_the_time_limit_follows_the_file_size(user):
    kind = types.get("data_processing")
    small = make_file(user, content=b"a\n1\n")
    assert kind.time_limit_for({"file_id": str(small.pk)}) == 120
    File.objects.filter(pk=small.pk).update(size=100 * 1024 * 1024)
    assert kind.time_limit_for({"file_id": str(small.pk)}) == 520
    assert kind.queue == types.QUEUE_LONG == types.get("report_generation").queue


def test_types_are_listed_with_their_schemas(client):
    listed = {t["name"]: t for t in client.get("/api/task-types/").json()}
    processing = listed["data_processing"]["input_schema"]
    assert processing["required"] == ["file_id"]
    assert processing["properties"]["file_id"]["format"] == "uuid"
    assert processing["properties"]["has_header"]["type"] == "boolean"
    report = listed["report_generation"]["input_schema"]["properties"]
    assert report["report"]["enum"] == ["task_summary", "tasks_export"]
    assert report["format"]["enum"] == ["csv", "json"]


# --- report_generation ----------------------------------------------------------------------


def _tasks_of(user) -> list[Task]:
    now = timezone.now()
    made = []
    for i, seconds in enumerate([1, 2, 3, 4, 10]):
        made.append(
            TaskFactory(
                owner=user,
                name=f'sum "{i}", quoted',
                status=TaskStatus.COMPLETED,
                started_at=now - timedelta(seconds=60),
                completed_at=now - timedelta(seconds=60 - seconds),
            )
        )
    made.append(
        TaskFactory(owner=user, task_type="countdown", status=TaskStatus.FAILED, error="boom\nline")
    )
    made.append(TaskFactory(owner=user, task_type="reverse", status=TaskStatus.CANCELLED))
    TaskFactory(status=TaskStatus.COMPLETED)  # someone else's: never in the report
    return made


def _report(user, report: str, fmt: str) -> tuple[Task, File, bytes]:
    task = report_task(user, report, fmt)
    task = run(task)
    assert task.status == TaskStatus.COMPLETED, task.error
    file = File.objects.get(pk=task.result["file_id"])
    assert file.owner_id == user.pk
    assert task.result["download_url"] == f"/api/files/{file.pk}/download/"
    with default_storage.open(file.storage_name) as handle:
        return task, file, handle.read()


def _parse(fmt: str, content: bytes) -> list[dict]:
    if fmt == "json":
        return json.loads(content)
    return list(csv.DictReader(io.StringIO(content.decode())))


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_tasks_export_rows_match_the_tasks(user, client, fmt):
    made = _tasks_of(user)
    task, file, content = _report(user, "tasks_export", fmt)
    rows = _parse(fmt, content)
    # Every task of the owner, the report's own task included (it was running).
    assert task.result["rows"] == len(rows) == len(made) + 1
    assert file.name.startswith("tasks_export-") and file.name.endswith(f".{fmt}")
    # UTF-8, said (a CSV said nothing, and a client read it as Latin-1: "CafÃ©").
    assert file.content_type == {"csv": "text/csv; charset=utf-8", "json": "application/json"}[fmt]
    by_id = {row["id"]: row for row in rows}
    assert set(rows[0]) == set(EXPORT_FIELDS)
    for made_task in made:
        row = by_id[str(made_task.pk)]
        assert row["name"] == made_task.name and row["status"] == made_task.status
        assert row["task_type"] == made_task.task_type
        assert row["assignee"] == user.username
    assert by_id[str(made[5].pk)]["error"] == "boom\nline"
    assert by_id[str(task.pk)]["status"] == "running"
    # And the file downloads through the API, byte for byte.
    response = client.get(task.result["download_url"])
    assert b"".join(response.streaming_content) == content
    assert response["Content-Type"] == file.content_type


@pytest.mark.django_db(transaction=True)
def test_an_export_records_its_progress_while_other_connections_commit(user):
    """The export read every task through one query kept open while the rows were written,
    and the run recorded its progress meanwhile on the same connection: on SQLite, once
    another connection had committed (the run's heartbeat, the dispatcher, beat), that
    write was refused ("database is locked"), the run closed the connection, and the export
    failed ("Cannot operate on a closed database"). Each page is now a query of its own."""
    many = 2500  # more than a page (2,000), as more than a chunk of the one query
    Task.objects.bulk_create(
        TaskFactory.build(owner=user, assignee=user, task_type="manual") for _ in range(many)
    )
    marker, other = Task.objects.filter(owner=user)[:2]

    def progress(percent):
        def commit_elsewhere():
            Task.objects.filter(pk=other.pk).update(progress=percent)
            connection.close()

        elsewhere = threading.Thread(target=commit_elsewhere)
        elsewhere.start()
        elsewhere.join()
        Task.objects.filter(pk=marker.pk).update(progress=percent)

    total, rows = reports.tasks_export_rows(user.pk, progress)
    exported = [row["id"] for row in rows]

    expected = Task.objects.filter(owner=user).order_by("created_at", "-id")
    assert total == many
    assert exported == [str(pk) for pk in expected.values_list("id", flat=True)]
    assert Task.objects.get(pk=marker.pk).progress == 99


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_text_a_spreadsheet_would_run_as_a_formula_is_text_in_a_csv(user, fmt):
    """A task named =HYPERLINK(...) was written as is: a spreadsheet opening the CSV
    runs it. In a CSV such a text starts with ', as OWASP advises; JSON keeps it as is."""
    names = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(1)", "\tx", "ok"]
    made = [TaskFactory(owner=user, task_type="manual", name=name) for name in names]
    made[0].description = "=1+2"
    made[0].save()
    _, _, content = _report(user, "tasks_export", fmt)
    by_id = {row["id"]: row for row in _parse(fmt, content)}
    shown = [by_id[str(task.pk)]["name"] for task in made]
    if fmt == "csv":
        assert shown == [f"'{name}" for name in names[:-1]] + ["ok"]
        assert by_id[str(made[0].pk)]["description"] == "'=1+2"
    else:
        assert shown == names


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_task_summary_counts_by_status_and_type_with_run_times(user, fmt):
    _tasks_of(user)
    task, _, content = _report(user, "task_summary", fmt)
    rows = {row["task_type"]: row for row in _parse(fmt, content)}
    assert task.result["rows"] == len(rows) == 4
    assert set(rows["sum"]) == set(SUMMARY_FIELDS)
    as_int = int if fmt == "csv" else (lambda value: value)
    assert as_int(rows["sum"]["total"]) == 5 and as_int(rows["sum"]["completed"]) == 5
    assert as_int(rows["countdown"]["failed"]) == 1
    assert as_int(rows["reverse"]["cancelled"]) == 1
    assert as_int(rows["report_generation"]["running"]) == 1
    assert float(rows["sum"]["p50_run_seconds"]) == 3.0
    assert float(rows["sum"]["p95_run_seconds"]) == 10.0
    assert rows["countdown"]["p50_run_seconds"] in ("", None)


def test_an_export_is_written_in_chunks(user, monkeypatch):
    from backend.files import reports

    monkeypatch.setattr(reports, "CHUNK_CHARS", 1024)
    for _ in range(300):
        TaskFactory(owner=user, status=TaskStatus.COMPLETED)
    sizes = []
    original = reports.csv_chunks

    def spy(fields, rows):
        for chunk in original(fields, rows):
            sizes.append(len(chunk))
            yield chunk

    monkeypatch.setattr(reports, "csv_chunks", spy)
    task = run(report_task(user, "tasks_export", "csv"))
    assert task.result["rows"] == 301
    assert len(sizes) > 20 and max(sizes) < 2048


def test_a_cancelled_report_leaves_no_file(user, media, monkeypatch):
    from backend.tasks import services as task_services

    for _ in range(300):
        TaskFactory(owner=user, status=TaskStatus.COMPLETED)
    task = report_task(user, "tasks_export", "json")
    original = task_services.task_report_progress

    def cancel_midway(*, task, progress):
        if progress >= 50:
            Task.objects.filter(pk=task.pk).update(status=TaskStatus.CANCELLED)
        return original(task=task, progress=progress)

    monkeypatch.setattr(task_services, "task_report_progress", cancel_midway)
    assert jobs.run_task(str(task.pk)).startswith("stopped")
    assert File.objects.count() == 0
    assert stored_files(media) == []


def test_a_report_meeting_a_full_storage_is_tried_again_later(user, media, full_disk, caplog):
    """A full disk failed the report at once, with the disk's error and a traceback in the
    worker's log; room made meanwhile would have let a later run write it."""
    task = report_task(user, "task_summary", "json")
    assert jobs.run_task(str(task.pk)).startswith("retrying in ")
    task.refresh_from_db()
    assert task.status == TaskStatus.SCHEDULED and task.run_at > timezone.now()
    assert task.error == (
        "StorageFull: the file storage has no room left (its disk or quota is full)"
    )
    assert File.objects.count() == 0 and stored_files(media) == []
    assert not [r for r in caplog.records if r.exc_info]
    # The last allowed run fails the task, saying so.
    Task.objects.filter(pk=task.pk).update(
        status=TaskStatus.PENDING, attempts=task.max_attempts - 1
    )
    assert jobs.run_task(str(task.pk)) == "failed"
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert task.error.endswith("is full) (gave up after 3 attempts)")
    assert not [r for r in caplog.records if r.exc_info]


def test_a_report_cancelled_and_retried_while_its_first_run_writes_keeps_the_retrys_file(
    user, media, monkeypatch
):
    """The first run of a report, cancelled while it streams, writes on until it finds out;
    a retry's run meanwhile writes the task's file anew. Both wrote one path: the first
    run's end (its clean-up, or its row refused) removed the retry's bytes, and the file
    the completed task names had none."""
    from backend.files import reports
    from backend.tasks import services as task_services

    monkeypatch.setattr(reports, "CHUNK_CHARS", 1024)
    for _ in range(300):
        TaskFactory(owner=user, status=TaskStatus.COMPLETED)
    task = report_task(user, "tasks_export", "csv")
    original = reports.csv_chunks
    retried = []

    def retried_midway(fields, rows):
        chunks = original(fields, rows)
        yield next(chunks)
        if not retried:  # the first run, a chunk written: cancel, retry, the retry's run
            retried.append(True)
            task_services.task_cancel(task=Task.objects.get(pk=task.pk), actor=user)
            task_services.task_retry(task=Task.objects.get(pk=task.pk), actor=user)
            assert run(task).status == TaskStatus.COMPLETED
        yield from chunks

    monkeypatch.setattr(reports, "csv_chunks", retried_midway)
    assert jobs.run_task(str(task.pk)).startswith("stopped")
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and task.attempts == 2, task.error
    file = File.objects.get(owner=user)
    assert task.result["file_id"] == str(file.pk)
    with default_storage.open(file.storage_name) as handle:
        content = handle.read()
    assert content.startswith(b"id,") and content.count(b"\r\n") == 302
    assert len(content) == file.size
    assert [p.name for p in stored_files(media)] == [file.storage_name.rsplit("/")[-1]]


@pytest.mark.parametrize("how", ["cancelled and retried", "rescued"])
def test_a_run_back_after_its_task_was_run_again_leaves_the_later_runs_file(
    user, media, monkeypatch, how
):
    """A run paused before it wrote its file (a stopped process, a slow query) while its
    task was cancelled and retried, or rescued, and run again to completion: back, it took
    the completed run's file for one an earlier run had left, and removed it (the task's
    download answered 404)."""
    from backend.files import reports
    from backend.tasks import services as task_services

    TaskFactory(owner=user, status=TaskStatus.COMPLETED)
    task = report_task(user, "task_summary", "csv")
    original = reports.task_summary_rows
    paused = []

    def run_again_meanwhile(owner_id):
        if not paused:  # the first run, before its file: the task is run again meanwhile
            paused.append(True)
            if how == "cancelled and retried":
                task_services.task_cancel(task=Task.objects.get(pk=task.pk), actor=user)
                task_services.task_retry(task=Task.objects.get(pk=task.pk), actor=user)
            else:  # the rescue, the heartbeat stale
                Task.objects.filter(pk=task.pk).update(status=TaskStatus.PENDING)
            assert run(task).status == TaskStatus.COMPLETED
        return original(owner_id)

    monkeypatch.setattr(reports, "task_summary_rows", run_again_meanwhile)
    assert jobs.run_task(str(task.pk)).startswith("stopped")
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and task.attempts == 2
    file = File.objects.get(pk=task.result["file_id"])
    assert file.storage_name.endswith("-2") and default_storage.exists(file.storage_name)
    assert [p.name for p in stored_files(media)] == [file.storage_name.rsplit("/")[-1]]


@pytest.mark.parametrize("report", ["task_summary", "tasks_export"])
@pytest.mark.parametrize("ended", ["cancelled", "overdue"])
def test_a_report_ended_after_its_last_row_leaves_no_file(user, media, monkeypatch, report, ended):
    """Cancelled, or past its deadline, once its rows were all written (no progress report
    to find out by), the run wrote its file's row anyway: a file no task named, for good."""
    from backend.files import reports
    from backend.tasks import services as task_services

    TaskFactory(owner=user, status=TaskStatus.COMPLETED)
    task = report_task(
        user,
        report,
        "csv",
        deadline=timezone.now() + timedelta(hours=1),
    )
    original = reports.csv_chunks

    def ended_at_the_end(fields, rows):
        yield from original(fields, rows)
        if ended == "cancelled":
            task_services.task_cancel(task=Task.objects.get(pk=task.pk), actor=user)
        else:
            Task.objects.filter(pk=task.pk).update(deadline=timezone.now() - timedelta(seconds=1))

    monkeypatch.setattr(reports, "csv_chunks", ended_at_the_end)
    said = jobs.run_task(str(task.pk))
    task.refresh_from_db()
    if ended == "cancelled":
        assert said.startswith("stopped") and task.status == TaskStatus.CANCELLED
    else:
        assert said == "failed: deadline exceeded" and task.status == TaskStatus.FAILED
    assert task.result is None
    assert File.objects.count() == 0
    assert stored_files(media) == []


@pytest.mark.parametrize("ended", ["cancelled", "overdue"])
def test_a_report_ended_between_its_file_and_its_outcome_leaves_no_file(
    user, media, monkeypatch, ended, django_capture_on_commit_callbacks
):
    """The file's row written (the task still the run's then), the task cancelled or past
    its deadline before the outcome: the task said cancelled (or failed), and its file
    stayed, named by no task."""
    from backend.tasks import services as task_services

    TaskFactory(owner=user, status=TaskStatus.COMPLETED)
    task = report_task(
        user,
        "task_summary",
        "csv",
        deadline=timezone.now() + timedelta(hours=1),
    )
    original = task_services.task_finish

    def ended_first(*, task, result):
        assert File.objects.filter(pk=result["file_id"]).exists()  # written
        if ended == "cancelled":
            task_services.task_cancel(task=Task.objects.get(pk=task.pk), actor=user)
        else:
            Task.objects.filter(pk=task.pk).update(deadline=timezone.now() - timedelta(seconds=1))
        return original(task=task, result=result)

    monkeypatch.setattr(task_services, "task_finish", ended_first)
    with django_capture_on_commit_callbacks(execute=True):
        said = jobs.run_task(str(task.pk))
    assert said.startswith("discarded" if ended == "cancelled" else "failed: deadline")
    assert File.objects.count() == 0
    assert stored_files(media) == []


@pytest.mark.django_db(transaction=True)
def test_a_report_whose_outcome_was_written_though_its_answer_was_lost_keeps_its_file(
    user, media, monkeypatch
):
    """The outcome committed and the connection lost before its answer: written again, the
    guarded UPDATE found the task completed already and said "discarded", and the file the
    completed task names was removed as if the outcome had not been recorded."""
    from django.db import OperationalError

    from backend.tasks import runner
    from backend.tasks import services as task_services

    TaskFactory(owner=user, status=TaskStatus.COMPLETED)
    task = report_task(user, "task_summary", "csv")
    original, calls = task_services.task_finish, []

    def answer_lost(*, task, result):
        calls.append(1)
        done = original(task=task, result=result)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return done

    monkeypatch.setattr(task_services, "task_finish", answer_lost)
    monkeypatch.setattr(runner, "RECORD_PAUSES", (0,))
    jobs.run_task(str(task.pk))
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED and len(calls) == 2
    file = File.objects.get(pk=task.result["file_id"])
    assert default_storage.exists(file.storage_name)


def _left_by_a_killed_run(user, task: Task) -> File:
    """What a run killed after its file's row and before its outcome leaves: the file."""
    from backend.files import reports

    Task.objects.filter(pk=task.pk).update(status=TaskStatus.RUNNING, attempts=1)
    result = reports.generate_report(
        owner_id=user.pk, report="task_summary", fmt="json", task_id=task.pk, attempt=1
    )
    return File.objects.get(pk=result["file_id"])


@pytest.mark.parametrize(
    "ended", ["cancelled", "failed by the rescue", "deleted", "purged with its task"]
)
def test_a_report_killed_after_its_file_leaves_none_once_its_task_ends_otherwise(
    user, media, ended, django_capture_on_commit_callbacks, settings
):
    """Nothing undid it in the killed process, and the task's cancel (or failure when out
    of attempts) left it among the owner's files, in the storage until the retention, for
    all the README's "a run cancelled before its outcome is recorded leaves none"."""
    from backend.files import services as file_services
    from backend.tasks import services as task_services

    task = report_task(user, "task_summary", "json")
    file = _left_by_a_killed_run(user, task)
    with django_capture_on_commit_callbacks(execute=True):
        if ended == "cancelled":
            task_services.task_cancel(task=task, actor=user)
        elif ended == "failed by the rescue":
            # Shorter than the database server has been up (the rescue waits that long).
            settings.TASK_HEARTBEAT_TIMEOUT = 1
            Task.objects.filter(pk=task.pk).update(
                max_attempts=1, heartbeat_at=timezone.now() - timedelta(hours=1)
            )
            assert task_services.tasks_rescue()["failed"] == 1
        elif ended == "deleted":
            Task.objects.filter(pk=task.pk).update(status=TaskStatus.FAILED)
            task_services.task_delete(task=task, actor=user)
        else:
            from backend.ops.services import tasks_purge

            task_services.task_cancel(task=task, actor=user)
            assert tasks_purge(older_than=timedelta(0), now=timezone.now() + timedelta(1)) == {
                "cancelled": 1
            }
        assert default_storage.exists(file.storage_name)
        if ended in ("cancelled", "failed by the rescue"):
            assert File.objects.filter(pk=file.pk).exists()  # until the purge
            assert file_services.files_purge(dry_run=True)["files"] == 1
            assert file_services.files_purge()["files"] == 1
    assert not File.objects.filter(pk=file.pk).exists()
    assert stored_files(media) == []


def test_the_purge_keeps_a_report_file_while_its_task_may_still_write_it(
    user, media, django_capture_on_commit_callbacks
):
    """A failed report retried (pending again) or completed keeps its file: its run
    writes it anew, or it is the result."""
    from backend.files import services as file_services

    pending = report_task(user, "task_summary", "json")
    _left_by_a_killed_run(user, pending)
    Task.objects.filter(pk=pending.pk).update(status=TaskStatus.PENDING)
    done = report_task(user, "task_summary", "csv", status=TaskStatus.COMPLETED)
    done_file = _left_by_a_killed_run(user, done)
    Task.objects.filter(pk=done.pk).update(status=TaskStatus.COMPLETED, completed_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        assert file_services.files_purge()["files"] == 0
    assert File.objects.count() == 2 and default_storage.exists(done_file.storage_name)


@pytest.mark.parametrize("age_days", [0, 40], ids=["new", "past the retention"])
def test_a_left_report_file_an_active_task_reads_is_kept_and_counted_so(
    user, media, django_capture_on_commit_callbacks, age_days
):
    """The dry run counted it as a file it would delete; the run kept it, counted nowhere
    (and then, past the retention, twice)."""
    from backend.files import services as file_services

    task = report_task(user, "task_summary", "json")
    file = _left_by_a_killed_run(user, task)
    File.objects.filter(pk=file.pk).update(created_at=timezone.now() - timedelta(days=age_days))
    Task.objects.filter(pk=task.pk).update(status=TaskStatus.FAILED, completed_at=timezone.now())
    TaskFactory(
        owner=user,
        task_type="data_processing",
        input_data={"file_id": str(file.pk)},
        status=TaskStatus.SCHEDULED,
    )
    for dry_run in (True, False):
        with django_capture_on_commit_callbacks(execute=True):
            outcome = file_services.files_purge(dry_run=dry_run, older_than=timedelta(days=30))
        assert (outcome["files"], outcome["kept_in_use"]) == (0, 1), (dry_run, outcome)
    assert File.objects.filter(pk=file.pk).exists()


def test_percentile():
    assert percentile([1.0], 95) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0


@pytest.mark.parametrize("left", ["a file", "bytes without a row"])
@pytest.mark.parametrize("lost_attempt", [1, None], ids=["its attempt's path", "one path"])
def test_a_report_run_again_after_a_lost_run_leaves_one_file(user, left, lost_attempt):
    """A worker killed after the report's file was written but before the task's outcome
    was (the rescue runs the task again) left a second file no task named; killed while
    writing it, bytes without a row that no purge ever removed. A report's file has its
    task's id: the run again replaces what the lost one left, at its attempt's path or at
    the one path every run wrote before each attempt had its own."""
    from backend.files import services

    task = report_task(user, "task_summary", "csv", attempts=1)  # the lost run's
    file_id = services.file_id_of_task(task.pk)
    path = services.storage_path(file_id, lost_attempt)
    if left == "a file":
        services.file_store(
            owner_id=user.pk,
            name="lost.csv",
            chunks=[b"old"],
            file_id=file_id,
            attempt=lost_attempt,
        )
    else:
        default_storage.save(path, io.BytesIO(b"half of a repo"))
    assert default_storage.exists(path)

    task = run(task)
    assert task.status == TaskStatus.COMPLETED and task.attempts == 2, task.error
    assert task.result["file_id"] == str(file_id)
    assert list(File.objects.filter(owner=user).values_list("pk", flat=True)) == [file_id]
    stored = File.objects.get(pk=file_id)
    assert stored.storage_name == services.storage_path(file_id, 2)
    assert stored.name.startswith("task_summary-")
    with default_storage.open(stored.storage_name) as handle:
        assert handle.read().startswith(b"task_type,")  # the report, not what was left
    folder = path.rsplit("/", 1)[0]
    assert default_storage.listdir(folder)[1] == [f"{file_id.hex}-2"]  # nothing else beside it


def test_a_left_report_file_that_a_task_reads_is_kept(user):
    """A file left by a lost run that the owner started a task on meanwhile stays; the run
    again writes a new one."""
    from backend.files import services

    task = report_task(user, "task_summary", "csv")
    left = services.file_store(
        owner_id=user.pk,
        name="lost.csv",
        chunks=[b"a\n1\n"],
        file_id=services.file_id_of_task(task.pk),
    )
    TaskFactory(owner=user, task_type="data_processing", input_data={"file_id": str(left.pk)})
    task = run(task)
    assert task.status == TaskStatus.COMPLETED, task.error
    assert task.result["file_id"] != str(left.pk)
    assert File.objects.filter(pk=left.pk).exists()

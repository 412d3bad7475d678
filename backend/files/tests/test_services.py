"""File rules: names, storing streams, deleting, the in-use check and the cleanup."""

import threading
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.db import connection, connections
from django.utils import timezone

from backend.common.errors import Conflict, DomainError, PermissionDenied
from backend.common.tests.concurrency import wait_until_a_session_waits_on_a_lock
from backend.files import services
from backend.files.models import File
from backend.files.names import clean_content_type, sanitize_name
from backend.tasks import services as task_services
from backend.tasks.models import Task, TaskStatus
from backend.tasks.services import lifecycle
from backend.tasks.tests.factories import TaskFactory

from .conftest import sha256, stored_files
from .factories import make_file

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("report.csv", "report.csv"),
        ("../../etc/passwd", "passwd"),
        ("a/b\\c.txt", "c.txt"),
        ("..\x00.csv", "csv"),
        ("...", "file"),
        (" . .env", "env"),
        (". .bashrc", "bashrc"),
        (".. ..htaccess", "htaccess"),
        ("\u00a0.\u2003.profile", "profile"),
        ("", "file"),
        (None, "file"),
        ("\u200bzero\u200d.txt", "zero.txt"),
        ("tab\there.txt", "tabhere.txt"),
        ("e\u0301.txt", "\u00e9.txt"),
        ("x" * 400, "x" * 255),
        ("y" * 300 + ".verylongextension1", ("y" * 300 + ".verylongextension1")[:255]),
    ],
)
def test_sanitize_name(raw, clean):
    assert sanitize_name(raw) == clean


def test_clean_content_type():
    assert clean_content_type("Text/CSV", "a.csv") == "text/csv"
    assert clean_content_type("", "a.csv") == "text/csv"
    assert clean_content_type("bad type", "a.unknownext") == "application/octet-stream"
    assert clean_content_type("application/octet-stream", "a.csv") == "text/csv"
    assert clean_content_type("application/octet-stream", "a") == "application/octet-stream"
    # A well-formed type longer than the column holds (PostgreSQL refused the row: a 500).
    assert clean_content_type("a" * 60 + "/" + "b" * 60, "a.csv") == "text/csv"
    assert clean_content_type("a" * 50 + "/" + "b" * 49, "a.csv") == "a" * 50 + "/" + "b" * 49


@pytest.mark.parametrize(
    "raw, stored",
    [
        ("Text/CSV; charset=UTF-8", "text/csv; charset=utf-8"),
        ('text/plain;charset="iso-8859-1"', "text/plain; charset=iso-8859-1"),
        ("text/plain; format=flowed; charset=windows-1252", "text/plain; charset=windows-1252"),
        ("text/plain; charset=utf-8; charset=latin1", "text/plain"),  # which one: neither
        ("text/plain; charset=a b", "text/plain"),
        ("text/plain; charset=\r\nX-Evil: 1", "text/plain"),
        ("text/plain; charset=" + "x" * 41, "text/plain"),
        ("bad type; charset=utf-8", "text/csv"),  # the type guessed from the name: no charset
        # The type fits the column, with its charset it would not: the type is kept.
        ("application/vnd." + "x" * 60 + "; charset=" + "a" * 30, "application/vnd." + "x" * 60),
    ],
)
def test_clean_content_type_keeps_a_charset_the_client_gave(raw, stored):
    """A declared charset was dropped, and the bytes were served as text of none said: read
    as Latin-1, or as the reader's code page."""
    assert clean_content_type(raw, "a.csv") == stored


def test_file_store_streams_chunks_and_hashes_them(user, media):
    chunks = [b"a" * 100_000, b"", b"b" * 50_000]
    file = services.file_store(owner_id=user.pk, name="../gen.txt", chunks=iter(chunks))
    content = b"".join(chunks)
    assert file.name == "gen.txt" and file.owner_id == user.pk
    assert file.size == len(content) and file.sha256 == sha256(content)
    assert file.content_type == "text/plain"
    with default_storage.open(file.storage_name) as handle:
        assert handle.read() == content


def test_a_stream_that_fails_half_way_leaves_no_bytes_and_no_row(user, media):
    def chunks():
        yield b"x" * 200_000
        raise RuntimeError("the generator broke")

    with pytest.raises(RuntimeError):
        services.file_store(owner_id=user.pk, name="broken.csv", chunks=chunks())
    assert File.objects.count() == 0
    assert stored_files(media) == []


def test_a_row_that_cannot_be_written_removes_the_bytes(user, media, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("database refused")

    monkeypatch.setattr(File.objects, "create", fail)
    with pytest.raises(RuntimeError):
        services.file_store(owner_id=user.pk, name="x.csv", chunks=[b"data"])
    assert stored_files(media) == []


def test_file_in_use_reads_input_data_of_active_tasks(user):
    file = make_file(user)
    other = make_file(user)
    assert not services.file_in_use(file.pk)
    TaskFactory(owner=user, input_data={"file_id": str(file.pk)}, status=TaskStatus.FAILED)
    assert not services.file_in_use(file.pk)
    TaskFactory(owner=user, input_data={"file_id": str(file.pk)}, status=TaskStatus.RUNNING)
    TaskFactory(owner=user, input_data={"numbers": [1]}, status=TaskStatus.PENDING)
    assert services.file_in_use(file.pk)
    assert not services.file_in_use(other.pk)
    assert services.file_ids_in_use() == {str(file.pk)}


def test_delete_by_someone_else_is_refused(user, other_user):
    file = make_file(user)
    with pytest.raises(PermissionDenied):
        services.file_delete(file=file, actor=other_user)
    assert File.objects.filter(pk=file.pk).exists()


def test_delete_in_use_is_a_conflict(user):
    file = make_file(user)
    TaskFactory(owner=user, input_data={"file_id": str(file.pk)}, status=TaskStatus.PENDING)
    with pytest.raises(Conflict) as refused:
        services.file_delete(file=file, actor=user)
    assert refused.value.code == "file_in_use"


def test_deleting_twice_removes_once(user, django_capture_on_commit_callbacks):
    file = make_file(user)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.file_delete(file=file, actor=user)
        services.file_delete(file=file, actor=None)
    assert len(callbacks) == 1
    assert not default_storage.exists(file.storage_name)


def test_bytes_that_cannot_be_deleted_are_only_logged(user, monkeypatch, caplog):
    file = make_file(user)

    def broken(name):
        raise OSError("read-only storage")

    monkeypatch.setattr(default_storage, "delete", broken)
    services._delete_bytes(file.storage_name)
    assert "could not delete stored file" in caplog.text


def _aged(file: File, days: int) -> File:
    File.objects.filter(pk=file.pk).update(created_at=timezone.now() - timedelta(days=days))
    return file


def test_purge_removes_old_unused_files_rows_and_bytes(
    user, settings, media, django_capture_on_commit_callbacks
):
    settings.FILE_RETENTION_DAYS = 30
    old = _aged(make_file(user, content=b"old"), 31)
    used = _aged(make_file(user, content=b"used"), 40)
    recent = _aged(make_file(user, content=b"recent"), 29)
    TaskFactory(owner=user, input_data={"file_id": str(used.pk)}, status=TaskStatus.SCHEDULED)
    dry = services.files_purge(dry_run=True)
    assert dry == {"files": 1, "bytes": 3, "kept_in_use": 1, "leftovers": 0, "leftover_bytes": 0}
    assert File.objects.count() == 3
    with django_capture_on_commit_callbacks(execute=True):
        outcome = services.files_purge(batch_size=1)
    assert outcome == {
        "files": 1,
        "bytes": 3,
        "kept_in_use": 1,
        "leftovers": 0,
        "leftover_bytes": 0,
    }
    assert set(File.objects.values_list("pk", flat=True)) == {used.pk, recent.pk}
    assert not default_storage.exists(old.storage_name)
    assert default_storage.exists(used.storage_name)
    assert len(stored_files(media)) == 2


def test_purge_with_another_age(user, django_capture_on_commit_callbacks):
    _aged(make_file(user), 3)
    make_file(user)
    assert services.files_purge(older_than=timedelta(days=5))["files"] == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert services.files_purge(older_than=timedelta(days=2))["files"] == 1
        assert services.files_purge(older_than=timedelta(0))["files"] == 1
    assert File.objects.count() == 0


def test_purge_in_batches_visits_every_file(user, django_capture_on_commit_callbacks):
    files = [_aged(make_file(user), 60) for _ in range(5)]
    TaskFactory(owner=user, input_data={"file_id": str(files[2].pk)}, status=TaskStatus.RUNNING)
    with django_capture_on_commit_callbacks(execute=True):
        outcome = services.files_purge(batch_size=2)
    assert outcome["files"] == 4 and outcome["kept_in_use"] == 1
    assert list(File.objects.values_list("pk", flat=True)) == [files[2].pk]


# --- a delete racing the create of a task that reads the file ----------------------------


def test_a_task_is_not_created_on_a_file_deleted_after_its_input_was_checked(user):
    """The input's check (the file is the owner's) and the task's INSERT are two steps; a
    delete between them left an active task whose file was gone, which then failed."""
    file = make_file(user)
    File.objects.filter(pk=file.pk).delete()  # after the serializer saw it
    with pytest.raises(DomainError) as refused:
        task_services.task_create(
            owner=user, task_type="data_processing", input_data={"file_id": str(file.pk)}
        )
    assert refused.value.code == "file_not_found"
    assert not Task.objects.exists()


def test_a_retry_of_a_task_whose_file_was_deleted_is_refused(user):
    """A retry made the task active again without its file (which then failed the run), and
    a retry racing the file's delete got past the delete's check."""
    file = make_file(user)
    task = task_services.task_create(
        owner=user, task_type="data_processing", input_data={"file_id": str(file.pk)}
    )
    task_services.task_cancel(task=task, actor=user)
    services.file_delete(file=file, actor=user)  # allowed: no active task uses it

    with pytest.raises(Conflict) as refused:
        task_services.task_retry(task=Task.objects.get(pk=task.pk), actor=user)

    assert refused.value.code == "file_not_found"
    assert Task.objects.get(pk=task.pk).status == TaskStatus.CANCELLED


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("remover", ["delete", "purge"])
@pytest.mark.parametrize("callback_url", ["", "https://hooks.example.com/done"])
def test_a_delete_waits_for_the_create_of_a_task_that_reads_the_file(
    user, monkeypatch, remover, callback_url
):
    """The create writes its task in a transaction that holds the file's row until the
    task is committed: a delete sent meanwhile waits, then finds the task and answers 409.
    (Without the lock, the delete would not see the uncommitted task and remove the file.
    With a callback_url the create was a transaction before the lock came, so that case
    fails on the code before it.)"""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite: the create's transaction holds the write lock; no row locks")
    file = make_file(user)
    File.objects.filter(pk=file.pk).update(created_at=timezone.now() - timedelta(days=30))
    inserted, outcome = threading.Event(), {}
    insert = lifecycle._insert_within_limit

    def insert_then_linger(task):
        insert(task)
        inserted.set()
        # The delete is sent now, while this transaction is open: it waits on its lock.
        wait_until_a_session_waits_on_a_lock(unless=lambda: not deleter.is_alive())

    monkeypatch.setattr(lifecycle, "_insert_within_limit", insert_then_linger)

    def delete():
        inserted.wait(10)
        try:
            if remover == "purge":
                purged = services.files_purge(older_than=timedelta(days=1))
                outcome["delete"] = "file_in_use" if purged["kept_in_use"] else "deleted"
            else:
                services.file_delete(file=File.objects.get(pk=file.pk), actor=user)
                outcome["delete"] = "deleted"
        except Conflict as exc:
            outcome["delete"] = exc.code
        finally:
            connections.close_all()

    deleter = threading.Thread(target=delete)
    deleter.start()
    task = task_services.task_create(
        owner=user,
        task_type="data_processing",
        input_data={"file_id": str(file.pk)},
        run_at=timezone.now() + timedelta(hours=1),
        callback_url=callback_url,
    )
    deleter.join(20)
    assert outcome == {"delete": "file_in_use"}
    assert File.objects.filter(pk=file.pk).exists() and Task.objects.filter(pk=task.pk).exists()

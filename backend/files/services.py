"""Every change to files: store, register, delete, purge. Bytes go through Django's default
storage only (``default_storage.open/save/delete``), so any storage backend works.

Order of writes: bytes first, then the row (a row never points at missing bytes; when the
row cannot be written the bytes are removed again); on delete, the row first and the bytes
after commit (a rolled-back delete keeps its bytes)."""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.core.files import File as DjangoFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from backend.common.errors import (
    Conflict,
    DomainError,
    PayloadTooLarge,
    PermissionDenied,
    no_room,
)
from backend.tasks.models import ACTIVE_STATUSES, Task, TaskStatus
from backend.users.models import User

from .models import File
from .names import clean_content_type, sanitize_name
from .streams import HashingChunkReader
from .uploads import HashedUploadedFile

logger = logging.getLogger(__name__)


FILES_FOLDER = "files"


def storage_path(file_id: uuid.UUID, attempt: int | None = None) -> str:
    """Where a file's bytes live in the storage: generated, never the client's name. A
    task's file (``file_id_of_task``) as each run of the task writes it: its attempt's own
    path, so no two runs ever write one path."""
    suffix = f"-{attempt}" if attempt is not None else ""
    return f"{FILES_FOLDER}/{file_id.hex[:2]}/{file_id.hex}{suffix}"


# --- create -----------------------------------------------------------------------------


def file_refuse_too_large() -> None:
    raise PayloadTooLarge(
        f"The file is larger than the {settings.MAX_UPLOAD_SIZE} bytes allowed (MAX_UPLOAD_SIZE).",
        code="file_too_large",
    )


def file_upload(
    *, owner: User, upload: HashedUploadedFile, expected_sha256: str | None = None
) -> File:
    """Register an upload that the upload handler has hashed while it streamed in. A
    ``sha256`` that does not match refuses it before anything is stored."""
    if upload.size > settings.MAX_UPLOAD_SIZE:
        file_refuse_too_large()
    if expected_sha256 and expected_sha256.lower() != upload.sha256:
        raise DomainError(
            f"The file's SHA-256 is {upload.sha256}, not the {expected_sha256.lower()} given; "
            f"nothing was stored.",
            code="sha256_mismatch",
        )
    name = sanitize_name(upload.name)
    return _store(
        owner=owner,
        content=upload,
        name=name,
        content_type=clean_content_type(_declared_type(upload), name),
        size=lambda: upload.size,
        sha256=lambda: upload.sha256,
    )


def _declared_type(upload) -> str:
    """The part's content type with its charset, which Django keeps apart (as bytes)."""
    charset = getattr(upload, "charset", None)
    if isinstance(charset, bytes):
        charset = charset.decode("latin-1")
    return f"{upload.content_type}; charset={charset}" if charset else upload.content_type


def file_store(
    *,
    owner_id,
    name: str,
    chunks: Iterable[bytes],
    content_type: str | None = None,
    file_id: uuid.UUID | None = None,
    attempt: int | None = None,
    still_running: Callable[[], None] | None = None,
) -> File:
    """Store generated content given as an iterable of ``bytes`` chunks, hashing it on the
    way: it is never held whole in memory. Used by task types that write files.

    ``file_id``: the id a run of a task always gives its file (``file_id_of_task``). A run
    that died before its outcome was written (the rescue runs the task again) left that
    file, or bytes without a row when it died writing them: they are removed first, so a
    task leaves one file however often it ran. Kept, and a new id used, when an active task
    of the owner's reads the left file meanwhile.

    ``attempt``: the run's; its bytes go to a path of their own (``storage_path``), so a
    run cancelled while it writes, and still writing when a retry's run writes the file
    anew, never removes the retry's bytes. ``still_running``: raises when the run is no
    longer the task's; called in the transaction that writes the row, which it then holds
    the task's row for, so a run that lost its task writes no row (its bytes are removed)."""
    reader = HashingChunkReader(chunks)
    name = sanitize_name(name)
    path = None
    if file_id is not None:
        if _left_by_earlier_runs_removed(file_id, owner_id, attempt, still_running):
            path = storage_path(file_id, attempt)
        else:
            file_id = None
    return _store(
        owner=User(pk=owner_id),
        content=DjangoFile(reader, name=name),
        name=name,
        content_type=clean_content_type(content_type, name),
        size=lambda: reader.size,
        sha256=lambda: reader.sha256,
        file_id=file_id,
        path=path,
        before_row=still_running,
    )


def file_id_of_task(task_id) -> uuid.UUID:
    """The id of the file a task writes: the same for every run of the task."""
    return uuid.uuid5(_TASK_FILES, str(task_id))


_TASK_FILES = uuid.UUID("6f1c9d2e-3b4a-4f5e-9a8b-7c6d5e4f3a2b")


def _left_by_earlier_runs_removed(
    file_id: uuid.UUID, owner_id, attempt: int | None, still_running=None
) -> bool:
    """False when the file is there and in use (then it stays), or is not an earlier
    attempt's. Only while the run is still the task's (``still_running``, which raises
    otherwise): a run paused long enough to be rescued, or cancelled and retried, removed
    the file the task's later run had completed with, when it came back."""
    with transaction.atomic():
        if still_running is not None:
            still_running()  # and the task's row held until this ends
        left = File.objects.select_for_update().filter(pk=file_id, owner_id=owner_id).first()
        if left is not None:
            if file_in_use(left.pk) or _attempt_of(left.storage_name) >= (attempt or 1):
                return False
            logger.warning("file %s: left by an earlier run of its task; written again", left.pk)
            left.delete()
        elif File.objects.filter(pk=file_id).exists():
            return False  # another owner's: never touched
    # The row is gone (a run is never inside a transaction): its bytes, and those of every
    # earlier attempt that died (or lost its task) while writing them. A run still writing
    # its own path goes on into nothing: it can no longer write a row (``still_running``).
    paths = {storage_path(file_id, earlier) for earlier in range(1, attempt or 1)}
    paths.add(storage_path(file_id))  # the one path of every run before attempts had theirs
    paths.add(storage_path(file_id, attempt))
    if left is not None:
        _delete_bytes(left.storage_name)
        paths.discard(left.storage_name)
    for path in sorted(paths):
        if default_storage.exists(path):
            logger.warning("file %s: bytes without a row, left by an earlier run", file_id)
            _delete_bytes(path)
    return True


def _attempt_of(storage_name: str) -> int:
    """The attempt whose run wrote ``storage_name`` (``storage_path``); 0 for one written
    before each attempt had its own path."""
    _, _, suffix = storage_name.rpartition("/")[2].partition("-")
    return int(suffix) if suffix.isdigit() else 0


class StorageFull(OSError):
    """The storage had no room for a file's bytes (its disk, or the service's quota on it,
    is full): nothing was kept. An upload answers 507; a task writing a file is tried again
    later, as for a server that is down, since room may be made meanwhile. Keeps the
    disk's ``errno``."""

    def __str__(self) -> str:
        return "the file storage has no room left (its disk or quota is full)"


def _store(
    *,
    owner: User,
    content,
    name: str,
    content_type: str,
    size,
    sha256,
    file_id=None,
    path: str | None = None,
    before_row: Callable[[], None] | None = None,
) -> File:
    file_id = file_id or uuid.uuid4()
    path = path or storage_path(file_id)
    try:
        stored_as = default_storage.save(path, content)
    except BaseException as exc:
        # A stream that failed half-way (or a cancelled task) leaves no partial bytes.
        _delete_bytes(path)
        if no_room(exc) and not isinstance(exc, StorageFull):
            raise StorageFull(exc.errno, exc.strerror) from exc
        raise
    try:
        with transaction.atomic():
            if before_row is not None:
                before_row()
            return File.objects.create(
                id=file_id,
                owner=owner,
                name=name,
                size=size(),
                sha256=sha256(),
                content_type=content_type,
                storage_name=stored_as,
            )
    except BaseException:
        _delete_bytes(stored_as)
        raise


# --- reads the workers need ----------------------------------------------------------------


class FileMissing(DomainError):
    """The file's row is there, its bytes are not (removed from the storage by hand, or a
    storage restored without them): 410, without the storage's path."""

    status_code = 410
    code = "file_missing"


def file_open(file: File):
    """The file's bytes, opened for reading through the storage (a file-like object)."""
    try:
        return default_storage.open(file.storage_name, "rb")
    except FileNotFoundError:
        raise _missing(file) from None


def file_require_bytes(file: File) -> None:
    """FileMissing when the file's bytes are gone from the storage (a conditional download
    answered 304 from the row alone told a caching client nothing of it)."""
    if not default_storage.exists(file.storage_name):
        raise _missing(file)


def _missing(file: File) -> FileMissing:
    logger.error("file %s: no bytes in the storage at %s", file.pk, file.storage_name)
    return FileMissing("the file's bytes are missing from the storage; upload it again")


# --- delete -----------------------------------------------------------------------------


def file_in_use(file_id) -> bool:
    """True while an active task names this file in its ``input_data.file_id``."""
    return Task.objects.filter(
        status__in=ACTIVE_STATUSES, input_data__file_id=str(file_id)
    ).exists()


def file_ids_in_use() -> set[str]:
    values = Task.objects.filter(
        status__in=ACTIVE_STATUSES, input_data__has_key="file_id"
    ).values_list("input_data__file_id", flat=True)
    return {str(value) for value in values}


@transaction.atomic
def file_delete(*, file: File, actor: User | None) -> None:
    """Remove the row now and the bytes once committed; refused (409 ``file_in_use``)
    while an active task uses the file. ``actor`` None: the system (purge)."""
    if actor is not None and not (actor.is_staff or file.owner_id == actor.pk):
        raise PermissionDenied("Only the file's owner or staff can delete it.")
    # Lock the row, so two deletes (or a delete and a purge) do not both remove the bytes.
    if not File.objects.select_for_update().filter(pk=file.pk).exists():
        return
    if file_in_use(file.pk):
        raise Conflict(
            "An active task uses this file; cancel it or wait for it to finish.",
            code="file_in_use",
        )
    File.objects.filter(pk=file.pk).delete()
    transaction.on_commit(partial(_delete_bytes, file.storage_name))


@transaction.atomic
def file_discard(*, file_id: uuid.UUID, storage_name: str) -> None:
    """Remove a file a task's run made for a result that was not recorded: its row (when
    it is still the one the run wrote, and no active task reads it) now, its bytes once
    committed."""
    file = File.objects.select_for_update().filter(pk=file_id, storage_name=storage_name).first()
    if file is None or file_in_use(file.pk):
        return
    file.delete()
    transaction.on_commit(partial(_delete_bytes, storage_name))


# The task type whose runs write a file of the task's own (``file_id_of_task``).
REPORT_TYPE = "report_generation"
UNFINISHED = (TaskStatus.FAILED, TaskStatus.CANCELLED)


def report_files_discard(*, task_ids: Iterable) -> tuple[int, int, list[File]]:
    """Remove the files of these report tasks, which ended without completing (cancelled,
    failed) or are being deleted so, when a run left one: killed (or its outcome lost)
    after writing its file's row, and before its outcome, so no undo came (a run that
    ends writes none). Such a file is no task's result. Called in the transaction that
    holds the tasks' rows; a file an active task reads stays. Returns (files, bytes)
    removed and the files kept (in use)."""
    ids = [file_id_of_task(task_id) for task_id in task_ids]
    if not ids:
        return 0, 0, []
    files = list(
        File.objects.select_for_update()
        .filter(pk__in=ids)
        .only("pk", "storage_name", "size", "created_at")
    )
    due = [file for file in files if not file_in_use(file.pk)]
    File.objects.filter(pk__in=[file.pk for file in due]).delete()
    for file in due:
        logger.warning("file %s: left by a report whose task did not complete; removed", file.pk)
        transaction.on_commit(partial(_delete_bytes, file.storage_name))
    return len(due), sum(file.size for file in due), [file for file in files if file not in due]


def _unfinished_reports_purge(
    since: datetime, dry_run: bool, batch_size: int
) -> tuple[int, int, int]:
    """``report_files_discard`` for the report tasks that ended without completing since
    ``since`` (a file older than that goes by age anyway), in batches. Only the tasks that
    have such a file (almost never any) are locked, in their status (a retry, whose run
    writes the file anew, waits), one another holds being left for the next purge. Returns
    (files, bytes) removed, or that would be with ``dry_run``, and how many are kept."""
    ended = Task.objects.filter(
        task_type=REPORT_TYPE, status__in=UNFINISHED, completed_at__gte=since
    ).values_list("pk", flat=True)
    removed = removed_bytes = kept = 0
    ids = list(ended)
    for start in range(0, len(ids), batch_size):
        of_file = {file_id_of_task(pk): pk for pk in ids[start : start + batch_size]}
        found = File.objects.filter(pk__in=list(of_file))
        if dry_run:
            # An older one is counted with the old files.
            rows = list(found.filter(created_at__gte=since).values_list("pk", "size"))
            in_use = [pk for pk, _ in rows if file_in_use(pk)]
            removed += len(rows) - len(in_use)
            removed_bytes += sum(size for pk, size in rows if pk not in in_use)
            kept += len(in_use)
            continue
        having = [of_file[pk] for pk in found.values_list("pk", flat=True)]
        if not having:
            continue
        with transaction.atomic():
            locked = (
                Task.objects.select_for_update(skip_locked=True)
                .filter(pk__in=having, status__in=UNFINISHED)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            files, size, in_use = report_files_discard(task_ids=list(locked))
        # An older one kept is counted with the old files, as in a dry run.
        kept += sum(1 for file in in_use if file.created_at >= since)
        removed, removed_bytes = removed + files, removed_bytes + size
    return removed, removed_bytes, kept


def files_purge(
    *, older_than: timedelta | None = None, dry_run: bool = False, batch_size: int = 500
) -> dict[str, int]:
    """Remove files created more than ``older_than`` ago (default FILE_RETENTION_DAYS) that
    no active task uses: rows in batches, bytes after each batch commits; and those reports
    left whose tasks did not complete (``_unfinished_reports_purge``), counted with them.
    And the bytes in the storage that no row names, last written as long ago
    (``_leftovers_purge``)."""
    if older_than is None:
        older_than = timedelta(days=settings.FILE_RETENTION_DAYS)
    cutoff = timezone.now() - older_than
    candidates = File.objects.filter(created_at__lt=cutoff)
    leftovers = partial(_leftovers_purge, timezone.now() - max(older_than, LEFTOVER_GRACE), dry_run)
    unfinished, unfinished_bytes, unfinished_kept = _unfinished_reports_purge(
        cutoff, dry_run, batch_size
    )
    if dry_run:
        keep = _as_uuids(file_ids_in_use())
        due = candidates.exclude(pk__in=keep)
        totals = due.aggregate(files=Count("pk"), bytes=Sum("size"))
        return {
            "files": totals["files"] + unfinished,
            "bytes": (totals["bytes"] or 0) + unfinished_bytes,
            "kept_in_use": candidates.filter(pk__in=keep).count() + unfinished_kept,
            **leftovers(),
        }
    removed, removed_bytes, kept = unfinished, unfinished_bytes, unfinished_kept
    gone: set[str] = set()  # the bytes of the rows removed here (removed once committed)
    after: tuple | None = None
    while True:
        page = candidates.order_by("created_at", "pk")
        if after is not None:
            page = page.filter(Q(created_at__gt=after[0]) | Q(created_at=after[0], pk__gt=after[1]))
        batch = list(page.values_list("pk", "created_at", "storage_name", "size")[:batch_size])
        if not batch:
            break
        after = (batch[-1][1], batch[-1][0])
        with transaction.atomic():
            # The rows are locked first, as a task's create locks the files it reads until
            # its task is committed; then checked inside the transaction that deletes, so a
            # task created meanwhile keeps its file.
            locked = set(
                File.objects.select_for_update()
                .filter(pk__in=[row[0] for row in batch])
                .values_list("pk", flat=True)
            )
            in_use = file_ids_in_use()
            batch = [row for row in batch if row[0] in locked]
            due = [row for row in batch if str(row[0]) not in in_use]
            kept += len(batch) - len(due)
            File.objects.filter(pk__in=[row[0] for row in due]).delete()
            for row in due:
                transaction.on_commit(partial(_delete_bytes, row[2]))
                gone.add(row[2])
        removed += len(due)
        removed_bytes += sum(row[3] for row in due)
    return {"files": removed, "bytes": removed_bytes, "kept_in_use": kept, **leftovers(gone)}


# Bytes without a row are left alone while this young at least: an upload's or a report's
# row is written right after its bytes (which a stream being written keeps touching).
LEFTOVER_GRACE = timedelta(hours=1)


def _leftovers_purge(
    cutoff: datetime, dry_run: bool, gone: frozenset = frozenset()
) -> dict[str, int]:
    """Remove the bytes under ``files/`` that no row names, last written before ``cutoff``:
    what a run killed while writing a report left, its task then deleted or failed for good
    (no run again removes it), or an upload whose row was rolled back after its bytes were
    stored. ``{"leftovers", "leftover_bytes"}``, counted, not removed, with ``dry_run``."""
    found = found_bytes = 0
    shards = _listed(FILES_FOLDER, 0)
    for shard in sorted(shard for shard in shards if SHARD_NAME.fullmatch(shard)):
        names = _listed(f"{FILES_FOLDER}/{shard}", 1)
        # Only names the service writes (``storage_path``, and the storage's suffix for a
        # name taken): anything else there is not the service's to remove (a name not
        # UTF-8 had also stopped the whole purge, rows too, at every run).
        paths = [
            f"{FILES_FOLDER}/{shard}/{name}" for name in sorted(names) if BYTES_NAME.fullmatch(name)
        ]
        for start in range(0, len(paths), 500):
            batch = paths[start : start + 500]
            named = set(
                File.objects.filter(storage_name__in=batch).values_list("storage_name", flat=True)
            )
            for path in batch:
                if path in named or path in gone:
                    continue
                try:
                    if default_storage.get_modified_time(path) >= cutoff:
                        continue
                    size = default_storage.size(path)
                except OSError:
                    continue  # removed meanwhile, or unreadable (a symlink loop)
                if not dry_run:
                    _delete_bytes(path)
                found += 1
                found_bytes += size
    if found and not dry_run:
        logger.warning("removed %d leftover(s) in the storage that no file names", found)
    return {"leftovers": found, "leftover_bytes": found_bytes}


# The folders and names ``storage_path`` makes: a shard is two hex digits, a name is the
# file's id in hex, with its run's attempt for a task's file, and with the suffix Django's
# storage adds to a name taken (``get_alternative_name``: ``_`` and 7 letters or digits).
SHARD_NAME = re.compile(r"[0-9a-f]{2}")
BYTES_NAME = re.compile(r"[0-9a-f]{32}(-[0-9]+)?(_[A-Za-z0-9]{7})?")


def _listed(folder: str, which: int) -> list[str]:
    """The folders (``which`` 0) or files (1) in a folder of the storage; none when it is
    missing or cannot be read, and without an entry that cannot be (a symlink loop, no
    permission: one line in the log), so one such entry does not stop the purge. (The
    file-system storage's ``listdir`` fails as a whole on one such entry.)"""
    try:
        local = default_storage.path(folder)
    except NotImplementedError:  # a remote storage: no links nor permissions of its own
        local = None
    try:
        if local is None:
            return default_storage.listdir(folder)[which]
        names = []
        with os.scandir(local) as entries:
            for entry in entries:
                try:
                    # A link is not followed: what it leads to is not the service's.
                    if entry.is_symlink():
                        logger.info("purge: %s/%s is a link; skipped", folder, entry.name)
                    elif entry.is_dir() == (which == 0):
                        names.append(entry.name)
                except OSError as exc:
                    logger.warning(
                        "purge: %s/%s cannot be read (%s); skipped", folder, entry.name, exc
                    )
        return names
    except FileNotFoundError:
        return []
    except OSError as exc:
        logger.warning("purge: %s cannot be read (%s); skipped", folder, exc)
        return []


def _as_uuids(values: Iterable[str]) -> list[uuid.UUID]:
    ids = []
    for value in values:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            continue
    return ids


def _delete_bytes(name: str) -> None:
    try:
        default_storage.delete(name)
    except Exception:  # the row is gone either way; a leftover blob is only logged
        logger.exception("could not delete stored file %s", name)

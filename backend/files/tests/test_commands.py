from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from backend.files.models import File

from .factories import make_file

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command("purge_files", *args, stdout=out)
    return out.getvalue().strip()


def test_purge_files(user, settings, django_capture_on_commit_callbacks):
    settings.FILE_RETENTION_DAYS = 10
    old = make_file(user, content=b"x" * 2048)
    File.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=11))
    make_file(user)
    assert run("--dry-run") == (
        "would delete 1 file(s), 2.0\xa0KB; 0 kept (used by active tasks); "
        "would delete 0 leftover(s) no file names, 0\xa0bytes"
    )
    assert File.objects.count() == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert run() == (
            "deleted 1 file(s), 2.0\xa0KB; 0 kept (used by active tasks); "
            "deleted 0 leftover(s) no file names, 0\xa0bytes"
        )
    assert File.objects.count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert run("--older-than", "0").startswith("deleted 1 file(s)")
    assert File.objects.count() == 0


def test_purge_files_removes_old_bytes_that_no_file_names(
    user, media, settings, django_capture_on_commit_callbacks
):
    """A run killed while writing a report, its task then deleted (or failed for good),
    left its bytes with no row for ever: no run again came to remove them, and the purge
    walked rows only. Those untouched for the retention (an hour at least) go; younger ones
    (an upload between its bytes and its row) and every file's stay."""
    import os
    import time
    import uuid

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from backend.files.services import storage_path

    settings.FILE_RETENTION_DAYS = 10
    kept = make_file(user, content=b"kept")
    old_kept = make_file(user, content=b"kept too")
    File.objects.filter(pk=old_kept.pk).update(created_at=timezone.now())  # a new row
    left = default_storage.save(storage_path(uuid.uuid4(), 1), ContentFile(b"x" * 3000))
    fresh = default_storage.save(storage_path(uuid.uuid4()), ContentFile(b"being written"))
    long_ago = time.time() - 11 * 86400
    for path in (left, old_kept.storage_name):
        os.utime(default_storage.path(path), (long_ago, long_ago))

    assert run("--dry-run").endswith("would delete 1 leftover(s) no file names, 2.9\xa0KB")
    assert default_storage.exists(left)
    assert run().endswith("deleted 1 leftover(s) no file names, 2.9\xa0KB")
    assert not default_storage.exists(left)
    for path in (fresh, kept.storage_name, old_kept.storage_name):
        assert default_storage.exists(path)
    # A name no row could hold (not UTF-8), a file's or a folder's, stopped the whole purge.
    files = os.fsencode(default_storage.path("files"))
    for odd in (os.path.join(files, b"ab", b"bad\xff"), os.path.join(files, b"\xff\xfe", b"x")):
        os.makedirs(os.path.dirname(odd), exist_ok=True)
        with open(odd, "wb") as handle:
            handle.write(b"q")
        os.utime(odd, (long_ago, long_ago))
    assert run().endswith("deleted 0 leftover(s) no file names, 0\xa0bytes")
    # An hour at least, whatever the age asked for.
    os.utime(default_storage.path(fresh), (time.time() - 1800,) * 2)
    with django_capture_on_commit_callbacks(execute=True):  # the rows' bytes go as they do
        purged = run("--older-than", "0")
    assert purged.endswith("deleted 0 leftover(s) no file names, 0\xa0bytes")
    assert default_storage.exists(fresh)


def test_purge_files_leaves_what_the_service_did_not_write_and_goes_past_unreadable_folders(
    user, media, tmp_path, caplog
):
    """A symlink loop under files/ stopped every purge (rows too) at listing it; a folder
    linked there (a shard moved to another disk, or anything else) had any old file in it
    removed, outside MEDIA_ROOT too. Only names the service writes are its leftovers."""
    import os
    import time
    import uuid

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from backend.files.services import storage_path

    long_ago = time.time() - 86400
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = outside / "keep.txt"
    precious.write_bytes(b"precious")
    os.utime(precious, (long_ago, long_ago))
    left = default_storage.save(storage_path(uuid.uuid4(), 1), ContentFile(b"x" * 10))
    os.utime(default_storage.path(left), (long_ago, long_ago))
    files = default_storage.path("files")
    os.symlink(outside, os.path.join(files, "zz"))
    os.symlink(outside, os.path.join(files, left.split("/")[1], "7d"))
    os.symlink("loop", os.path.join(files, "loop"))
    os.symlink("ab", os.path.join(files, "ab"))  # a shard's name, looping

    assert run("--older-than", "0").endswith("deleted 1 leftover(s) no file names, 10\xa0bytes")
    assert precious.read_bytes() == b"precious"
    assert not default_storage.exists(left)
    unread = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(unread) == 2 and {m.split()[1] for m in unread} == {"files/loop", "files/ab"}


@pytest.mark.parametrize("days", ["-1", "800000", "99999999999999999999"])
def test_purge_files_refuses_an_age_out_of_range(days):
    with pytest.raises(CommandError):
        run("--older-than", days)

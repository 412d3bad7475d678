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


def test_purge_files_leaves_what_the_service_did_not_write_and_follows_no_link(
    user, media, tmp_path, caplog
):
    """A symlink loop under files/ stopped every purge (rows too) at listing it; a folder
    linked there (a shard moved to another disk, or anything else) had any old file in it
    removed, outside MEDIA_ROOT too. Only names the service writes are its leftovers, and
    a link is not followed."""
    import os
    import time
    import uuid

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from backend.files.services import storage_path

    long_ago = time.time() - 86400
    outside = tmp_path / "outside"
    outside.mkdir()
    kept_outside = [outside / "keep.txt", outside / ("ef" * 16), outside / ("ef" * 16 + ".bak")]
    for path in kept_outside:
        path.write_bytes(b"precious")
        os.utime(path, (long_ago, long_ago))
    file_id = uuid.uuid4()
    left = default_storage.save(storage_path(file_id, 1), ContentFile(b"x" * 10))
    clash = default_storage.save(storage_path(file_id, 1), ContentFile(b"y" * 10))  # _AbC1234
    shard = default_storage.path(os.path.dirname(left))
    not_ours = [
        os.path.join(os.fsencode(shard), name)
        for name in (f"{file_id.hex}.bak".encode(), file_id.hex.encode() + b"\xff")
    ]
    for path in not_ours:
        with open(path, "wb") as handle:
            handle.write(b"not the service's")
    for path in (default_storage.path(left), default_storage.path(clash), *not_ours):
        os.utime(path, (long_ago, long_ago))
    files = default_storage.path("files")
    os.symlink(outside, os.path.join(files, "zz"))
    os.symlink(outside, os.path.join(files, "ef"))  # a shard's name
    os.symlink(outside / ("ef" * 16), os.path.join(shard, "ef" * 16))  # a file's name
    os.symlink("loop", os.path.join(files, "loop"))
    os.symlink("ab", os.path.join(files, "ab"))  # a shard's name, looping

    assert run("--older-than", "0").endswith("deleted 2 leftover(s) no file names, 20\xa0bytes")
    assert all(path.read_bytes() == b"precious" for path in kept_outside)
    assert all(os.path.exists(path) for path in not_ours)
    assert not default_storage.exists(left) and not default_storage.exists(clash)
    links = [r.getMessage() for r in caplog.records if "is a link; skipped" in r.getMessage()]
    assert len(links) == 5, links


@pytest.mark.parametrize("days", ["-1", "800000", "99999999999999999999"])
def test_purge_files_refuses_an_age_out_of_range(days):
    with pytest.raises(CommandError):
        run("--older-than", days)

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
    assert run("--dry-run") == "would delete 1 file(s), 2.0\xa0KB; 0 kept (used by active tasks)"
    assert File.objects.count() == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert run() == "deleted 1 file(s), 2.0\xa0KB; 0 kept (used by active tasks)"
    assert File.objects.count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert run("--older-than", "0").startswith("deleted 1 file(s)")
    assert File.objects.count() == 0


@pytest.mark.parametrize("days", ["-1", "800000", "99999999999999999999"])
def test_purge_files_refuses_an_age_out_of_range(days):
    with pytest.raises(CommandError):
        run("--older-than", days)

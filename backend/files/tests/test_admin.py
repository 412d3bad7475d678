"""The files admin: list with search and owner filter, sizes for humans, download link,
and deletes that go through the service."""

import pytest
from django.contrib import messages
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.messages import get_messages
from django.core.files.storage import default_storage

from backend.files.models import File
from backend.tasks.models import TaskStatus
from backend.tasks.tests.factories import TaskFactory
from backend.users.tests.factories import UserFactory

from .factories import make_file

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/files/file/"


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def sent_messages(response) -> list[tuple[int, str]]:
    return [(m.level, m.message) for m in get_messages(response.wsgi_request)]


def test_changelist_search_filter_and_sizes(admin_client, user, other_user):
    mine = make_file(user, content=b"x" * 2048, name="findme.csv")
    theirs = make_file(other_user, content=b"y", name="other.txt")
    page = admin_client.get(CHANGELIST)
    assert page.status_code == 200
    assert b"2.0\xc2\xa0KB" in page.content and b"findme.csv" in page.content
    assert f"/admin/files/file/{mine.pk}/download/".encode() in page.content
    by_name = admin_client.get(CHANGELIST, {"q": "findme"})
    assert b"findme.csv" in by_name.content and b"other.txt" not in by_name.content
    by_hash = admin_client.get(CHANGELIST, {"q": theirs.sha256})
    assert b"other.txt" in by_hash.content and b"findme.csv" not in by_hash.content
    by_owner = admin_client.get(CHANGELIST, {"owner__id__exact": str(other_user.pk)})
    assert b"other.txt" in by_owner.content and b"findme.csv" not in by_owner.content


def test_changelist_search_finds_a_name_typed_with_a_combining_accent(admin_client, user):
    """Names are kept composed (NFC); ``e`` then U+0301 found nothing, as in the API."""
    make_file(user, name="\u00e9t\u00e9.csv")
    make_file(user, name="other.csv")
    for typed in ("e\u0301t", "\u00e9t"):
        result = admin_client.get(CHANGELIST, {"q": typed}).context["cl"].result_list
        assert [f.name for f in result] == ["\u00e9t\u00e9.csv"], typed


def test_detail_and_download(admin_client, user):
    file = make_file(user, content=b"a,b\n", name="d.csv")
    assert admin_client.get(f"{CHANGELIST}{file.pk}/change/").status_code == 200
    response = admin_client.get(f"{CHANGELIST}{file.pk}/download/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"a,b\n"
    assert response["Content-Disposition"] == 'attachment; filename="d.csv"'


def test_download_of_a_file_whose_bytes_are_gone_says_so(admin_client, user):
    """It was a 500 (the service's FileMissing, which the API answers with 410)."""
    file = make_file(user, content=b"a,b\n", name="gone.csv")
    default_storage.delete(file.storage_name)
    response = admin_client.get(f"{CHANGELIST}{file.pk}/download/", follow=True)
    assert response.redirect_chain == [(f"{CHANGELIST}{file.pk}/change/", 302)]
    [shown] = [str(m) for m in response.context["messages"]]
    assert shown == "the file's bytes are missing from the storage; upload it again (gone.csv)"
    assert "The file&#x27;s bytes are missing" in response.content.decode()  # capitalized


def test_download_needs_view_permission(client, user):
    file = make_file(user)
    client.force_login(UserFactory(is_staff=True))  # staff without permissions
    assert client.get(f"{CHANGELIST}{file.pk}/download/").status_code == 403
    client.force_login(user)  # not staff: sent to the login page
    assert client.get(f"{CHANGELIST}{file.pk}/download/").status_code == 302


def test_no_adding_or_editing(admin_client):
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403


def test_delete_action_asks_first_then_uses_the_service_and_logs(
    admin_client, user, django_capture_on_commit_callbacks
):
    """It deleted rows and bytes at the first click, and left no entry in the admin's log."""
    from django.contrib.admin.models import DELETION, LogEntry

    free = make_file(user, name="free.csv")
    used = make_file(user, name="used.csv")
    TaskFactory(owner=user, input_data={"file_id": str(used.pk)}, status=TaskStatus.RUNNING)
    chosen = {"action": "delete_selected", "_selected_action": [str(free.pk), str(used.pk)]}

    asked = admin_client.post(CHANGELIST, chosen)

    assert asked.status_code == 200 and b"Are you sure" in asked.content
    assert File.objects.count() == 2 and default_storage.exists(free.storage_name)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(CHANGELIST, {**chosen, "post": "yes"}, follow=True)
    assert b"1 file(s) deleted." in response.content
    assert b"An active task uses this file" in response.content
    assert list(File.objects.values_list("pk", flat=True)) == [used.pk]
    assert not default_storage.exists(free.storage_name)
    logged = LogEntry.objects.filter(action_flag=DELETION)
    assert list(logged.values_list("object_id", "object_repr")) == [(str(free.pk), str(free))]


def test_delete_view_uses_the_service(admin_client, user, django_capture_on_commit_callbacks):
    file = make_file(user)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"{CHANGELIST}{file.pk}/delete/", {"post": "yes"})
    assert not File.objects.exists() and not default_storage.exists(file.storage_name)
    used = make_file(user)
    TaskFactory(owner=user, input_data={"file_id": str(used.pk)}, status=TaskStatus.PENDING)
    response = admin_client.post(f"{CHANGELIST}{used.pk}/delete/", {"post": "yes"}, follow=True)
    assert b"An active task uses this file" in response.content
    assert File.objects.filter(pk=used.pk).exists()


def test_delete_view_refuses_a_file_in_use_with_only_the_reason(admin_client, user):
    used = make_file(user, name="used.csv")
    TaskFactory(owner=user, input_data={"file_id": str(used.pk)}, status=TaskStatus.RUNNING)
    response = admin_client.post(f"{CHANGELIST}{used.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}{used.pk}/change/"
    assert sent_messages(response) == [
        (
            messages.ERROR,
            "“used.csv”: An active task uses this file; cancel it or wait for it to finish.",
        )
    ]
    assert File.objects.filter(pk=used.pk).exists() and default_storage.exists(used.storage_name)
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()
    page = admin_client.get(response["Location"])
    assert page.status_code == 200 and b"An active task uses this file" in page.content


def test_delete_view_deletes_an_unused_file(admin_client, user, django_capture_on_commit_callbacks):
    file = make_file(user, name="free.csv")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"{CHANGELIST}{file.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert sent_messages(response) == [
        (messages.SUCCESS, "The file “free.csv” was deleted successfully.")
    ]
    assert not File.objects.exists() and not default_storage.exists(file.storage_name)
    assert LogEntry.objects.filter(action_flag=DELETION, object_id=str(file.pk)).exists()

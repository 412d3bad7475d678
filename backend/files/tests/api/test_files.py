"""The file endpoints over HTTP: upload with hashing and limits, list, metadata, download
(streamed, ETag, 304), delete (bytes gone, 409 while in use), visibility."""

import re

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils.http import http_date

from backend.files.models import File
from backend.files.names import sanitize_name
from backend.files.services import storage_path
from backend.files.tests.conftest import multipart, sha256, stored_files
from backend.files.tests.factories import make_file
from backend.tasks.models import TaskStatus
from backend.tasks.tests.factories import TaskFactory
from backend.users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

FILE_FIELDS = {
    "id", "name", "size", "sha256", "content_type", "owner", "owner_username", "created_at",
    "download_url",
}  # fmt: skip
CSV = b"name,amount\r\nann,1.5\r\nbob,2\r\n"


@pytest.fixture
def client(client_for, user):
    return client_for(user)


def read_stored(file: File) -> bytes:
    with default_storage.open(file.storage_name, "rb") as handle:
        return handle.read()


# --- upload -----------------------------------------------------------------------------


def test_upload_with_the_right_sha256(client, user, post_upload, media, upload_dir):
    response = post_upload(client, CSV, filename="report.csv", sha256=sha256(CSV))
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == FILE_FIELDS
    assert body["size"] == len(CSV) and body["sha256"] == sha256(CSV)
    assert body["name"] == "report.csv" and body["content_type"] == "text/csv"
    assert body["owner"] == str(user.pk) and body["owner_username"] == user.username
    assert body["download_url"] == f"http://testserver/api/files/{body['id']}/download/"
    file = File.objects.get(pk=body["id"])
    assert read_stored(file) == CSV
    # The storage path is generated from the id, never the client's name.
    assert file.storage_name == storage_path(file.pk)
    assert [p.name for p in stored_files(media)] == [file.pk.hex]
    assert list(upload_dir.iterdir()) == []


def test_two_file_parts_in_one_upload_are_refused(client, media, upload_dir):
    """The last part was stored and the first dropped without a word (a sha256 given for
    the first then failed as a mismatch)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    parts = [SimpleUploadedFile("first.csv", CSV), SimpleUploadedFile("second.csv", b"a\n")]
    response = client.post("/api/files/", {"file": parts})
    assert response.status_code == 400
    assert response.json()["file"] == ["Send one file per upload; this request has 2 file parts."]
    assert File.objects.count() == 0 and stored_files(media) == []
    assert list(upload_dir.iterdir()) == []


def test_two_sha256_parts_in_one_upload_are_refused(client, media, upload_dir):
    """The last was checked and the others dropped: a wrong digest beside the right one
    passed."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    for digests in (["0" * 64, sha256(CSV)], [sha256(CSV), sha256(CSV)]):
        response = client.post(
            "/api/files/", {"file": SimpleUploadedFile("a.csv", CSV), "sha256": digests}
        )
        assert response.status_code == 400
        assert response.json()["sha256"] == ["Give one SHA-256; this request has 2 sha256 parts."]
    assert File.objects.count() == 0 and stored_files(media) == []
    assert list(upload_dir.iterdir()) == []


def test_upload_without_sha256_and_uppercase_sha256(client, post_upload):
    assert post_upload(client, CSV).status_code == 201
    response = post_upload(client, CSV, sha256=sha256(CSV).upper())
    assert response.status_code == 201
    assert response.json()["sha256"] == sha256(CSV)


def test_upload_with_a_wrong_sha256_stores_nothing(client, post_upload, media, upload_dir):
    response = post_upload(client, CSV, sha256=sha256(b"something else"))
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "sha256_mismatch" and sha256(CSV) in body["detail"]
    assert File.objects.count() == 0
    assert stored_files(media) == []
    assert list(upload_dir.iterdir()) == []


@pytest.mark.parametrize("field", ["sha265", "SHA256", "name"])
def test_an_upload_refuses_a_field_it_does_not_take(client, field, media):
    """A misspelt sha256 ("sha265") was ignored, and a wrong digest went unchecked: 201."""
    body, header = multipart(
        {field: sha256(b"something else")},
        filename="data.csv",
        content=CSV,
        content_type="text/csv",
    )
    response = client.generic("POST", "/api/files/", body, content_type=header)
    assert response.status_code == 400, response.content
    assert response.json()[field] == ["Unknown field."]
    assert File.objects.count() == 0
    assert stored_files(media) == []


def test_an_empty_sha256_box_is_not_given(client, post_upload):
    """A browser's form sends its empty sha256 box as "": the upload is kept unchecked,
    as when the field is left out (it was refused, so the browsable API's form needed a
    digest for every upload)."""
    response = post_upload(client, CSV, sha256="")
    assert response.status_code == 201, response.content
    assert response.json()["sha256"] == sha256(CSV)


def test_the_browsable_api_offers_an_upload_form(user):
    browser = Client()
    browser.force_login(user)
    page = browser.get("/api/files/", HTTP_ACCEPT="text/html").content.decode()
    assert 'enctype="multipart/form-data"' in page
    assert 'type="file"' in page and 'name="file"' in page and 'name="sha256"' in page


@pytest.mark.parametrize("value", ["abc", "g" * 64, "a" * 65, " " + "a" * 63])
def test_upload_with_a_malformed_sha256_is_a_field_error(client, post_upload, value):
    response = post_upload(client, CSV, sha256=value)
    assert response.status_code == 400
    assert "sha256" in response.json()
    assert File.objects.count() == 0


def test_upload_one_byte_over_the_limit_is_413_and_leaves_nothing(
    client, post_upload, settings, media, upload_dir
):
    settings.MAX_UPLOAD_SIZE = 1000
    response = post_upload(client, b"x" * 1001)
    assert response.status_code == 413
    assert response.json()["code"] == "file_too_large"
    assert File.objects.count() == 0
    assert stored_files(media) == []
    assert list(upload_dir.iterdir()) == []
    # Exactly at the limit is fine.
    assert post_upload(client, b"x" * 1000).status_code == 201


@pytest.mark.parametrize("filename", ["..", ".", "a/b/", "C:\\dir\\", "\u00a0", "\u200b\u200b"])
def test_upload_named_by_a_path_alone_is_kept_under_the_fallback_name(
    client, post_upload, filename
):
    """Django's parser dropped a file part whose name was a path alone or nothing printable,
    and the upload was refused as "No file was submitted", though a name is cleaned (SPEC
    §6) and one left empty becomes "file"."""
    response = post_upload(client, CSV, filename=filename, sha256=sha256(CSV))
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "file" and response.json()["size"] == len(CSV)


def test_upload_to_a_full_disk_is_507_and_leaves_nothing(
    client, post_upload, media, upload_dir, full_disk, caplog
):
    """The storage's disk full (here its writes go to /dev/full, which the kernel answers
    with ENOSPC): a 500 and a traceback, as for a fault of the code; now a 507 the client
    can act on, one line in the log, and nothing kept."""
    response = post_upload(client, CSV, filename="report.csv")
    assert response.status_code == 507, response.content
    body = response.json()
    assert body["code"] == "insufficient_storage" and body["request_id"]
    assert "storage is full" in body["detail"]
    assert File.objects.count() == 0
    assert stored_files(media) == []
    assert list(upload_dir.iterdir()) == []
    [logged] = [r for r in caplog.records if "storage full" in r.getMessage()]
    assert logged.exc_info is None


def test_upload_with_its_temporary_folder_full_is_507_and_leaves_no_temporary_file(
    client, post_upload, media, upload_dir, monkeypatch
):
    """The part written so far stayed in the temporary folder until the garbage collector
    came (Django cleans up after StopUpload only), the folder full meanwhile: every upload
    after it was refused too."""
    import errno
    import gc

    from backend.files.uploads import HashedUploadedFile

    written = []

    def fills_up(self):
        def write(data):
            if written:  # the second chunk finds the folder full
                raise OSError(errno.ENOSPC, "No space left on device")
            written.append(len(data))
            return self.file.write(data)

        return write

    monkeypatch.setattr(HashedUploadedFile, "write", property(fills_up))
    gc.disable()  # what is left is seen now, not once the collector has been
    try:
        response = post_upload(client, b"x" * 200_000)
        left = list(upload_dir.iterdir())
    finally:
        gc.enable()
    assert response.status_code == 507, response.content
    assert written and left == []
    assert File.objects.count() == 0 and stored_files(media) == []


def test_a_form_read_by_the_csrf_check_with_its_temporary_folder_full_is_507(
    upload_dir, monkeypatch
):
    """The CSRF check reads a form's body before any view (an admin page's, a sign-in's):
    a full temporary folder there was a 500 and a traceback, not the 507 a view gives."""
    import errno

    from django.core.files.uploadedfile import SimpleUploadedFile

    from backend.files.uploads import HashedUploadedFile

    def full(self):
        def write(data):
            raise OSError(errno.ENOSPC, "No space left on device")

        return write

    browser = Client(enforce_csrf_checks=True, raise_request_exception=False)
    browser.get("/admin/login/")
    token = browser.cookies["csrftoken"].value
    monkeypatch.setattr(HashedUploadedFile, "write", property(full))
    response = browser.post(
        "/admin/login/",
        {"csrfmiddlewaretoken": token, "file": SimpleUploadedFile("a.csv", b"x" * 1000)},
    )
    assert response.status_code == 507
    assert b"storage is full" in response.content
    assert list(upload_dir.iterdir()) == []


def test_upload_far_over_the_limit_is_refused_before_reading(
    client, post_upload, settings, media, upload_dir
):
    settings.MAX_UPLOAD_SIZE = 1000
    response = post_upload(client, b"x" * 200_000)
    assert response.status_code == 413
    assert response.json()["code"] == "file_too_large"
    assert File.objects.count() == 0 and stored_files(media) == []
    assert list(upload_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("filename", "stored_as"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        (b"..\x00.csv", "csv"),
        ("C:\\Users\\ann\\data.csv", "data.csv"),
        (".hidden", "hidden"),
        ("na\x1bme\x7f.csv", "name.csv"),
        ("r\u202egnp.exe", "rgnp.exe"),
        ("  spaced .csv ", "spaced .csv"),
        ("données.csv", "données.csv"),
        ("a" * 300 + ".csv", "a" * 251 + ".csv"),
    ],
)
def test_names_are_sanitised_and_never_a_path(client, post_upload, media, filename, stored_as):
    response = post_upload(client, CSV, filename=filename)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == stored_as
    assert [p.relative_to(media).as_posix() for p in stored_files(media)] == [
        storage_path(File.objects.get().pk)
    ]


def test_upload_of_an_empty_file(client, post_upload):
    response = post_upload(client, b"", filename="empty.txt", content_type="text/plain")
    assert response.status_code == 201
    body = response.json()
    assert body["size"] == 0 and body["sha256"] == sha256(b"")


def test_a_bad_content_type_is_replaced(client, post_upload):
    response = post_upload(client, CSV, filename="x.json", content_type="nonsense")
    assert response.json()["content_type"] == "application/json"
    response = post_upload(client, CSV, filename="x", content_type="<script>/x")
    assert response.json()["content_type"] == "application/octet-stream"
    # Well-formed but longer than the column: PostgreSQL refused the row (a 500).
    response = post_upload(client, CSV, filename="x.csv", content_type="a" * 60 + "/" + "b" * 60)
    assert response.status_code == 201 and response.json()["content_type"] == "text/csv"


def test_a_declared_charset_is_kept_and_served(client, post_upload):
    """The part's ``charset`` was dropped: Latin-1 bytes came back as text of no charset,
    read by the client as whatever it assumes."""
    content = "café;1\n".encode("iso-8859-1")
    response = post_upload(
        client, content, filename="x.csv", content_type="text/csv; charset=ISO-8859-1"
    )
    assert response.status_code == 201, response.content
    assert response.json()["content_type"] == "text/csv; charset=iso-8859-1"
    download = client.get(response.json()["download_url"])
    assert download["Content-Type"] == "text/csv; charset=iso-8859-1"
    assert b"".join(download.streaming_content).decode("iso-8859-1") == "café;1\n"


@pytest.mark.parametrize("disposition", ['name="file"; filename=""', 'name="file"'])
def test_a_file_part_without_a_file_name_is_told_so(client, disposition):
    """Django reads such a part as a text field: the answer said "The submitted data was not
    a file. Check the encoding type on the form." (Python requests sends filename="" for a
    file given no name.)"""
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n"
        f"Content-Type: text/csv\r\n\r\na,b\n1,2\n\r\n--{boundary}--\r\n"
    ).encode()
    response = client.generic(
        "POST", "/api/files/", body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert response.status_code == 400
    assert "no file name" in response.json()["detail"]
    assert not File.objects.exists()


def test_upload_without_a_file_is_a_field_error(client):
    response = client.post("/api/files/", {"sha256": "a" * 64}, format="multipart")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and "file" in response.json()


def test_an_empty_file_box_is_no_file_submitted(client, post_upload):
    """What a browser sends for a form whose file box was left empty: a part with no file
    name. It said "The submitted data was not a file. Check the encoding type on the form"."""
    response = post_upload(client, b"", filename="", content_type="application/octet-stream")
    assert response.status_code == 400
    assert response.json()["file"] == ["No file was submitted."]


def test_upload_as_json_is_415(client):
    response = client.post("/api/files/", {"file": "x"}, format="json")
    assert response.status_code == 415


def test_upload_needs_authentication(api_client, post_upload):
    assert post_upload(api_client, CSV).status_code == 401
    assert File.objects.count() == 0


def test_upload_honours_idempotency_key(client, post_upload, media):
    first = post_upload(client, CSV, HTTP_IDEMPOTENCY_KEY="upload-1")
    again = post_upload(client, CSV, HTTP_IDEMPOTENCY_KEY="upload-1")
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert File.objects.count() == 1 and len(stored_files(media)) == 1
    other = post_upload(client, b"other", HTTP_IDEMPOTENCY_KEY="upload-1")
    assert other.status_code == 422
    assert File.objects.count() == 1 and len(stored_files(media)) == 1


# --- list and read ----------------------------------------------------------------------


def test_list_shows_own_files_only_and_staff_all(client_for, user, other_user, staff):
    mine = make_file(user, name="mine.csv")
    make_file(other_user, name="theirs.csv")
    body = client_for(user).get("/api/files/").json()
    assert body["count"] == 1 and body["results"][0]["id"] == str(mine.pk)
    assert set(body["results"][0]) == FILE_FIELDS
    assert client_for(staff).get("/api/files/").json()["count"] == 2


def test_list_search_ordering_and_pagination(client, user):
    make_file(user, content=b"123", name="alpha.csv")
    make_file(user, content=b"1", name="beta.txt")
    make_file(user, content=b"12", name="gamma.csv")
    names = lambda r: [f["name"] for f in r.json()["results"]]  # noqa: E731
    assert names(client.get("/api/files/?search=csv")) == ["gamma.csv", "alpha.csv"]
    assert names(client.get("/api/files/?ordering=size")) == ["beta.txt", "gamma.csv", "alpha.csv"]
    assert names(client.get("/api/files/?ordering=-name")) == ["gamma.csv", "beta.txt", "alpha.csv"]
    assert names(client.get("/api/files/?ordering=created_at")) == [
        "alpha.csv",
        "beta.txt",
        "gamma.csv",
    ]
    page = client.get("/api/files/?page_size=2&page=2").json()
    assert page["count"] == 3 and len(page["results"]) == 1
    # Several keys, comma-separated or repeated (the last alone was taken).
    make_file(user, content=b"9", name="delta.txt")
    by_size_then_name = ["beta.txt", "delta.txt", "gamma.csv", "alpha.csv"]
    assert names(client.get("/api/files/?ordering=size,name")) == by_size_then_name
    assert names(client.get("/api/files/?ordering=size&ordering=name")) == by_size_then_name


def test_search_finds_a_name_typed_with_a_combining_accent(client, user):
    """Names are stored composed (NFC); a search typed decomposed (``e`` then U+0301, as
    macOS and some keyboards send it) found nothing."""
    make_file(user, name=sanitize_name("e\u0301te\u0301.csv"))
    make_file(user, name="other.csv")
    for typed in ("e\u0301t", "\u00e9t"):
        found = client.get("/api/files/", {"search": typed}).json()
        assert [f["name"] for f in found["results"]] == ["\u00e9t\u00e9.csv"], typed


def test_list_with_an_invalid_ordering_is_400(client):
    response = client.get("/api/files/?ordering=sha256")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_list_query_count_does_not_grow_with_files(client, user):
    make_file(user)
    with CaptureQueriesContext(connection) as few:
        assert client.get("/api/files/").status_code == 200
    for _ in range(5):
        make_file(user)
    with CaptureQueriesContext(connection) as many:
        assert client.get("/api/files/").status_code == 200
    assert len(many) == len(few)


def test_metadata(client, user):
    file = make_file(user, content=CSV, name="m.csv")
    body = client.get(f"/api/files/{file.pk}/").json()
    assert body["id"] == str(file.pk) and body["size"] == len(CSV)
    assert body["sha256"] == sha256(CSV)


# --- download ---------------------------------------------------------------------------


def test_download_gives_back_identical_bytes_with_the_etag(client, user):
    content = bytes(range(256)) * 1000
    file = make_file(user, content=content, name="bin ary.dat")
    response = client.get(f"/api/files/{file.pk}/download/")
    assert response.status_code == 200
    assert response.streaming
    assert b"".join(response.streaming_content) == content
    assert response["ETag"] == f'"{sha256(content)}"'
    assert response["Content-Length"] == str(len(content))
    assert response["Content-Disposition"] == 'attachment; filename="bin ary.dat"'
    assert response["Content-Type"] == "application/octet-stream"


def test_a_download_if_match_another_etag_is_412_with_its_own_code(client, user):
    """Django answers If-Match with 412; its code was the catch-all "error"."""
    file = make_file(user)
    response = client.get(f"/api/files/{file.pk}/download/", HTTP_IF_MATCH='"other"')
    assert response.status_code == 412
    assert response.json()["code"] == "precondition_failed"
    schema = client.get("/api/schema/?format=json").json()
    download = schema["paths"]["/api/files/{id}/download/"]["get"]["responses"]
    assert "precondition_failed" in download["412"]["description"]
    assert (
        client.get(f"/api/files/{file.pk}/download/", HTTP_IF_MATCH=f'"{file.sha256}"').status_code
        == 200
    )


def test_the_download_documents_the_conditional_headers_it_answers(client):
    """The 304 and 412 were documented, the headers that bring them were not: Swagger's
    "Try it out" could not send them."""
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/files/{id}/download/"]["get"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since"}


def test_a_download_answers_the_dates_of_its_upload(client, user):
    """Last-Modified is the upload's time (the bytes never change), so If-Unmodified-Since
    and If-Modified-Since are answered by it: If-Unmodified-Since was 412 whatever its date,
    since the download named none (RFC 9110 §13.1.4)."""
    file = make_file(user)
    url = f"/api/files/{file.pk}/download/"
    uploaded = http_date(file.created_at.timestamp())
    response = client.get(url)
    assert response["Last-Modified"] == uploaded
    later = http_date(file.created_at.timestamp() + 3600)
    earlier = http_date(file.created_at.timestamp() - 3600)
    assert client.get(url, HTTP_IF_UNMODIFIED_SINCE=later).status_code == 200
    assert client.get(url, HTTP_IF_UNMODIFIED_SINCE=uploaded).status_code == 200
    refused = client.get(url, HTTP_IF_UNMODIFIED_SINCE=earlier)
    assert refused.status_code == 412 and refused.json()["code"] == "precondition_failed"
    # Its length said, as a HEAD of it says (it went out in chunks); and the headers every
    # other answer carries (they were lost with the body replaced by the JSON error).
    assert refused["Content-Length"] == str(len(refused.content))
    missing = client.get("/api/files/00000000-0000-0000-0000-000000000000/download/")
    for header in ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"):
        assert refused[header] == missing[header], header
    not_modified = client.get(url, HTTP_IF_MODIFIED_SINCE=uploaded)
    assert not_modified.status_code == 304
    assert not_modified["Last-Modified"] == uploaded and not_modified["ETag"] == response["ETag"]
    assert client.get(url, HTTP_IF_MODIFIED_SINCE=earlier).status_code == 200


@pytest.mark.parametrize("method", ["get", "head"])
@pytest.mark.parametrize("conditional", [False, True])
def test_download_of_a_file_whose_bytes_are_gone_is_410(client, user, method, conditional):
    """It was a 500 (FileNotFoundError from the storage); and with If-None-Match naming its
    ETag, a 304, so a caching client never learnt the file was gone."""
    file = make_file(user)
    default_storage.delete(file.storage_name)
    headers = {"HTTP_IF_NONE_MATCH": f'"{file.sha256}"'} if conditional else {}
    response = getattr(client, method)(f"/api/files/{file.pk}/download/", **headers)
    assert response.status_code == 410
    if method == "get":
        body = response.json()
        assert body["code"] == "file_missing" and file.storage_name not in body["detail"]


def test_the_schema_documents_the_410_of_a_download(client):
    response = client.get("/api/schema/", {"format": "json"}).json()
    gone = response["paths"]["/api/files/{id}/download/"]["get"]["responses"]["410"]
    assert "file_missing" in gone["description"]
    assert gone["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_download_of_a_non_ascii_name(client, user):
    file = make_file(user, name="données.csv")
    response = client.get(f"/api/files/{file.pk}/download/")
    assert "filename*=utf-8''donn%C3%A9es.csv" in response["Content-Disposition"]
    response.close()


def test_download_ignores_the_accept_header(client, user):
    file = make_file(user, content=CSV)
    response = client.get(f"/api/files/{file.pk}/download/", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == CSV
    missing = client.get(
        "/api/files/00000000-0000-0000-0000-000000000000/download/", HTTP_ACCEPT="text/csv"
    )
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


@pytest.mark.parametrize(
    "header",
    ['"{sha}"', 'W/"{sha}"', '"other", "{sha}"', "*"],
    ids=["exact", "weak", "list", "star"],
)
def test_if_none_match_gives_304(client, user, header):
    file = make_file(user, content=CSV)
    response = client.get(
        f"/api/files/{file.pk}/download/", HTTP_IF_NONE_MATCH=header.format(sha=file.sha256)
    )
    assert response.status_code == 304
    assert response["ETag"] == f'"{file.sha256}"'
    assert response.content == b""
    # As the 200 says them (they were left out, and the length was 0).
    assert response["Cache-Control"] == "private, no-cache"
    assert response["Content-Length"] == str(len(CSV))


def test_a_stale_if_none_match_gets_the_bytes(client, user):
    file = make_file(user, content=CSV)
    response = client.get(f"/api/files/{file.pk}/download/", HTTP_IF_NONE_MATCH='"stale"')
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == CSV


# --- delete -----------------------------------------------------------------------------


def test_delete_removes_row_and_bytes_after_commit(
    client, user, media, django_capture_on_commit_callbacks
):
    file = make_file(user, content=CSV)
    assert default_storage.exists(file.storage_name)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.delete(f"/api/files/{file.pk}/")
    assert response.status_code == 204
    assert not File.objects.filter(pk=file.pk).exists()
    assert not default_storage.exists(file.storage_name)
    assert stored_files(media) == []
    assert client.get(f"/api/files/{file.pk}/").status_code == 404


@pytest.mark.parametrize("status", [TaskStatus.SCHEDULED, TaskStatus.PENDING, TaskStatus.RUNNING])
def test_delete_while_an_active_task_uses_the_file_is_409(
    client, user, status, django_capture_on_commit_callbacks
):
    file = make_file(user, content=CSV)
    task = TaskFactory(
        owner=user, task_type="data_processing", input_data={"file_id": str(file.pk)}, status=status
    )
    response = client.delete(f"/api/files/{file.pk}/")
    assert response.status_code == 409
    assert response.json()["code"] == "file_in_use"
    assert File.objects.filter(pk=file.pk).exists()
    assert default_storage.exists(file.storage_name)
    # Once the task has ended the file can go, and its bytes with it.
    task.status = TaskStatus.COMPLETED
    task.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(f"/api/files/{file.pk}/").status_code == 204
    assert not default_storage.exists(file.storage_name)


def test_staff_may_delete_any_file(client_for, user, staff):
    file = make_file(user)
    assert client_for(staff).delete(f"/api/files/{file.pk}/").status_code == 204


# --- visibility -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("get", "download/"), ("head", "download/"), ("delete", "")],
)
def test_another_users_file_is_404_on_every_verb(client_for, user, method, suffix):
    theirs = make_file(UserFactory(), content=CSV)
    response = getattr(client_for(user), method)(f"/api/files/{theirs.pk}/{suffix}")
    assert response.status_code == 404
    assert File.objects.filter(pk=theirs.pk).exists()
    assert default_storage.exists(theirs.storage_name)


def test_files_need_authentication(api_client, user):
    file = make_file(user)
    assert api_client.get("/api/files/").status_code == 401
    assert api_client.get(f"/api/files/{file.pk}/download/").status_code == 401
    assert api_client.delete(f"/api/files/{file.pk}/").status_code == 401


def test_files_are_listed_in_the_api_root(client):
    assert "files" in client.get("/api/").json()


def test_swagger_leaves_the_optional_sha256_box_of_an_upload_empty(client):
    """It filled the box with a random string matching the field's pattern, which the
    upload then refused as the wrong SHA-256."""
    schema = client.get("/api/schema/", {"format": "json"}).json()
    upload = schema["components"]["schemas"]["FileUploadRequest"]["properties"]["sha256"]
    assert upload["example"] == ""
    # …which the documented constraints admit (an empty box is no SHA-256 given).
    assert re.fullmatch(upload["pattern"].strip("^$"), "") and "minLength" not in upload

import json
import re

import pytest
from django.test import Client

from backend.users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/users/not-a-uuid/", "/api/nothing-here/", "/health/x/"])
def test_unknown_api_urls_answer_json_404(client_for, user, path):
    response = client_for(user).get(path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_unknown_pages_elsewhere_stay_html(client):
    response = client.get("/nowhere/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_server_error_on_the_api_is_json(rf):
    from backend.common.views import server_error

    response = server_error(rf.get("/api/tasks/"))
    assert response.status_code == 500
    assert json.loads(response.content)["code"] == "server_error"


# --- one error shape under /api/, whatever raised it ----------------------------------------


@pytest.fixture(params=[True, False], ids=["debug", "production"])
def debug(request, settings):
    settings.DEBUG = request.param
    return request.param


@pytest.mark.parametrize("path", ["/api/tasks/1/", "/api/nothing/", "/api/tasks/x/cancel/"])
def test_unknown_routes_are_json_404_with_debug_on_or_off(client_for, user, debug, path):
    response = client_for(user).get(path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_unknown_task_id_has_the_error_shape(client_for, user):
    response = client_for(user).get("/api/tasks/00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_validation_errors_keep_field_lists_and_gain_detail_and_code(client_for, user):
    response = client_for(user).post(
        "/api/tasks/", {"task_type": "sum", "input_data": {"numbers": []}}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["detail"].startswith("input_data.numbers: ")
    assert isinstance(body["input_data"]["numbers"], list)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("put", "/api/tasks/", {}, 405, "method_not_allowed"),
        ("get", "/api/tasks/", {"HTTP_ACCEPT": "application/xml"}, 406, "not_acceptable"),
        (
            "post",
            "/api/tasks/",
            {"data": "x", "content_type": "application/xml"},
            415,
            "unsupported_media_type",
        ),
        ("get", "/api/tasks/", {"HTTP_AUTHORIZATION": "Bearer nonsense"}, 401, "token_not_valid"),
    ],
)
def test_protocol_errors_are_json(client, user, method, path, kwargs, status, code):
    if "HTTP_AUTHORIZATION" not in kwargs:
        client.force_login(user)
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    body = response.json()
    assert body["code"] == code and body["detail"]


def test_oversized_body_is_413_json(client_for, user, settings, debug):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"task_type": "sum", "input_data": {"numbers": [1] * 1000}})
    response = client_for(user).post("/api/tasks/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {
        "detail": "Request entity too large.",
        "code": "payload_too_large",
    }


def test_too_many_fields_or_files_is_a_400_json(client_for, user, settings):
    """Django refuses to parse more fields (query parameters too) or files than its limits:
    each was a 500 on the API."""
    from urllib.parse import urlencode

    from django.core.files.uploadedfile import SimpleUploadedFile

    from backend.files.models import File
    from backend.tasks.models import Task

    fields = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    client = client_for(user)
    response = client.get("/api/files/?" + "&".join(["a=1"] * (fields + 1)))
    assert response.status_code == 400
    assert response.json() == {
        "detail": f"The request has more than {fields} fields and query parameters.",
        "code": "too_many_fields",
    }
    form = urlencode([("task_type", "sum")] + [(f"f{i}", "1") for i in range(fields + 1)])
    response = client.post("/api/tasks/", form, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and response.json()["code"] == "too_many_fields"

    files = settings.DATA_UPLOAD_MAX_NUMBER_FILES
    parts = {f"file{i}": SimpleUploadedFile(f"{i}.txt", b"x") for i in range(files + 1)}
    response = client.post("/api/files/", {"file": SimpleUploadedFile("a.txt", b"a"), **parts})
    assert response.status_code == 400
    assert response.json() == {
        "detail": f"The request has more than {files} files.",
        "code": "too_many_files",
    }
    assert not File.objects.exists() and not Task.objects.exists()


def test_oversized_body_without_a_length_is_refused_by_the_parser(settings):
    """A chunked body (no Content-Length) is bounded by the JSON parser itself."""
    import io

    from backend.common.exceptions import PayloadTooLarge
    from backend.common.parsers import StrictJSONParser

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    with pytest.raises(PayloadTooLarge):
        StrictJSONParser().parse(io.BytesIO(json.dumps({"name": "x" * 2000}).encode()))
    small = json.dumps({"name": "x"}).encode()
    assert StrictJSONParser().parse(io.BytesIO(small)) == {"name": "x"}


def test_unhandled_error_is_json_500_with_a_logged_request_id(
    client_for, user, monkeypatch, caplog, debug
):
    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr("backend.tasks.selectors.task_list_source", broken)
    client = client_for(user)
    client.raise_request_exception = False
    response = client.get("/api/tasks/")
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "server_error" and "boom" not in response.content.decode()
    assert body["request_id"] == response["X-Request-ID"]
    assert any(body["request_id"] in r.getMessage() for r in caplog.records)


def test_request_id_is_echoed_when_given(client_for, user):
    response = client_for(user).get("/api/tasks/", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-ID"] == "abc-123"
    response = client_for(user).get("/api/tasks/", HTTP_X_REQUEST_ID="bad id\n")
    assert response["X-Request-ID"] != "bad id\n" and len(response["X-Request-ID"]) == 32


def test_every_operation_documents_its_error_responses(api_client):
    schema = api_client.get("/api/schema/?format=json").json()
    assert "Error" in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("400", "401", "403", "404", "429", "500"):
                assert status in responses, (method, path, status)
            if method != "get":
                assert {"409", "413", "415"} <= set(responses), (method, path)
    create = schema["paths"]["/api/tasks/"]["post"]["responses"]
    assert create["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }


def test_every_operation_documents_the_database_down_and_a_body_in_chunks(api_client):
    """503 ``database_unavailable`` (with Retry-After) can answer any operation, 411
    ``length_required`` any request sent in chunks (even one that takes no body, such as a
    task's cancel, or a GET), 413 and 415 a body whatever the method; none was in the
    schema of a GET (a GET with a chunked, too large or gzip body answers them)."""
    schema = api_client.get("/api/schema/?format=json").json()
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "503" in responses, (method, path)
            if path != "/health/":  # its 503 is its own body, naming the failing check
                assert responses["503"]["content"]["application/json"]["schema"] == error
                assert "Retry-After" in responses["503"]["headers"], (method, path)
            for status in ("411", "413", "415"):
                assert responses[status]["content"]["application/json"]["schema"] == error

    client = api_client
    for headers, status in (
        ({"HTTP_TRANSFER_ENCODING": "chunked"}, 411),
        ({"HTTP_CONTENT_ENCODING": "gzip"}, 415),
    ):
        answered = client.generic("GET", "/api/tasks/", b"{}", "application/json", **headers)
        assert answered.status_code == status, answered.content


@pytest.mark.parametrize("value", ["0", "-1", "abc", "+5", "1_0", "\uff15", "1.5"])
def test_page_size_that_is_not_a_positive_integer_is_400(client_for, user, value):
    response = client_for(user).get("/api/tasks/", {"page_size": value})
    assert response.status_code == 400 and "page_size" in response.json()


@pytest.mark.parametrize("path", ["/api/tasks/", "/api/files/", "/api/schedules/", "/api/users/"])
def test_a_blank_page_or_page_size_is_not_given(client_for, staff, path):
    """As a blank filter is not given (``status=``): ``page_size=`` was a 400 while
    ``page=`` was page 1."""
    client = client_for(staff)
    for query in ("page_size=", "page_size=%20", "page=%20", "page=&page_size="):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 200, (query, response.content)
        assert response.json()["previous"] is None


def test_a_blank_page_size_gives_the_default_size(client_for, staff):
    UserFactory.create_batch(11)
    response = client_for(staff).get("/api/users/?page_size=")
    assert response.status_code == 200
    assert len(response.json()["results"]) == 10 and response.json()["count"] == 12


@pytest.mark.parametrize("path", ["/api/tasks/", "/api/files/", "/api/schedules/", "/api/users/"])
@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "1e1", "\uff11"])
def test_a_page_that_is_not_a_page_number_is_400_naming_it(client_for, user, path, value):
    """It was a 404 "Invalid page.", as if the list had no such page."""
    response = client_for(user).get(path, {"page": value})
    assert response.status_code == 400, response.content
    assert response.json()["page"] == ["A page number (1 or more) is required, or 'last'."]


def test_a_page_past_the_last_is_404_and_last_is_the_last(client_for, user):
    client = client_for(user)
    assert client.get("/api/tasks/", {"page": "1"}).status_code == 200  # an empty list too
    assert client.get("/api/tasks/", {"page": "last"}).status_code == 200
    assert client.get("/api/tasks/", {"page": ""}).status_code == 200  # not given
    response = client.get("/api/tasks/", {"page": "2"})
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_page_size_above_the_maximum_is_reduced(client_for, user):
    client = client_for(user)
    response = client.get("/api/tasks/", {"page_size": 1000})
    assert response.status_code == 200
    # …which the schema says (it said "1 to 100", which a client reads as a 400 past 100).
    schema = client.get("/api/schema/", {"format": "json"}).json()
    parameters = schema["paths"]["/api/tasks/"]["get"]["parameters"]
    (page_size,) = [p for p in parameters if p["name"] == "page_size"]
    assert "above 100 gives pages of 100" in page_size["description"]


# --- every route with or without its trailing slash ----------------------------------------


def test_routes_answer_without_their_trailing_slash(client_for, user, api_client):
    client = client_for(user)
    created = client.post("/api/tasks", {"task_type": "manual", "name": "no slash"}, format="json")
    assert created.status_code == 201, created.content  # not a redirect that drops the body
    task_id = created.json()["id"]
    assert client.get(f"/api/tasks/{task_id}").json()["name"] == "no slash"
    assert client.post(f"/api/tasks/{task_id}/cancel").json()["status"] == "cancelled"
    assert client.get("/api/tasks").json()["count"] == 1
    assert client.get("/api/users/me").status_code == 200
    assert api_client.get("/health").status_code in (200, 503)
    assert api_client.get("/api").status_code in (200, 401)
    response = client.get("/api/nothing-here")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_register_and_token_without_slashes(api_client):
    body = {"username": "slashless", "password": "a-Long-pass-123"}
    assert api_client.post("/api/register", body, format="json").status_code == 201
    assert api_client.post("/api/token", body, format="json").status_code == 200


@pytest.mark.parametrize("debug", [False, True])
def test_the_browsable_apis_sign_in_and_out_without_slashes(client, user, settings, debug):
    """A POST to /api-auth/login or /api-auth/logout was a 500 with DEBUG on (Django's
    APPEND_SLASH refuses to redirect a POST) and, with it off, a redirect that dropped the
    form: nobody was signed in or out."""
    settings.DEBUG = debug
    credentials = {"username": user.username, "password": "pass-word-123"}
    user.set_password(credentials["password"])
    user.save()

    response = client.post("/api-auth/login", {**credentials, "next": "/api/"})
    assert response.status_code == 302 and response["Location"] == "/api/"
    assert client.get("/api/users/me/").json()["username"] == user.username

    response = client.post("/api-auth/logout")
    # Without a next page, to the API root: the admin's "Logged out" page, where it went,
    # offered to log in again to the admin, where only staff get in.
    assert response.status_code == 302 and response["Location"] == "/api/"
    assert client.get("/api/users/me/").status_code in (401, 403)
    client.force_login(user)
    response = client.post("/api-auth/logout/?next=/api/tasks/")
    assert response.status_code == 302 and response["Location"] == "/api/tasks/"


# --- the routes DRF's router adds with a format suffix (``/api/tasks/<id>/cancel.json``) -----

UUID_GROUP = re.compile(r"\(\?P<pk>[^)]*\)")


def _suffixed_routes() -> list[tuple[str, str]]:
    """(method, path) for every route the router serves with a ``.json`` suffix, the
    object's id left as ``{pk}``."""
    from backend.urls import router

    routes = []
    for pattern in router.urls:
        regex, actions = str(pattern.pattern), getattr(pattern.callback, "actions", None)
        if "(?P<format>" in regex and actions:
            path = UUID_GROUP.sub("{pk}", regex.lstrip("^").split("\\.(?P<format>")[0])
            # (DRF adds "head" beside "get" once a view has been called: left out.)
            routes += [(method, f"/api/{path}.json") for method in actions if method != "head"]
    return routes


def _notification_of(user):
    from backend.notifications.models import Notification
    from backend.tasks.tests.factories import TaskFactory

    user.webhook_url = "https://hooks.example.com/in"
    user.save()
    task = TaskFactory(owner=user)
    return Notification.objects.create(
        event="task.created",
        channel="webhook",
        target=user.webhook_url,
        user=user,
        task_id=task.pk,
        next_attempt_at=task.created_at,
    )


def test_the_suffixed_routes_are_all_found():
    routes = _suffixed_routes()
    assert ("post", "/api/tasks/{pk}/cancel.json") in routes
    assert ("get", "/api/files/{pk}/download.json") in routes
    assert ("patch", "/api/users/me.json") in routes
    assert ("get", "/api/notifications/{pk}.json") in routes
    assert len(routes) == 36


@pytest.mark.parametrize(("method", "path"), _suffixed_routes())
def test_a_format_suffix_answers_as_the_route_without_it(
    client_for, user, settings, tmp_path, method, path
):
    """Never a 500 (the test client raises what a handler raised), and a GET answers as
    it does without the suffix."""
    from backend.files.tests.factories import make_file
    from backend.schedules.tests.factories import make_schedule
    from backend.tasks.tests.factories import TaskFactory

    settings.MEDIA_ROOT = str(tmp_path)
    kind = path.split("/")[2].split(".")[0]
    make = {
        "tasks": lambda: TaskFactory(owner=user, assignee=user, task_type="manual"),
        "files": lambda: make_file(user),
        "schedules": lambda: make_schedule(owner=user),
        "users": lambda: user,
        "notifications": lambda: _notification_of(user),
    }
    url = path.format(pk=make[kind]().pk) if "{pk}" in path else path
    response = getattr(client_for(user), method)(url, {}, format="json")
    assert response.status_code < 500, response.content
    if method == "get":
        plain = client_for(user).get(url.removesuffix(".json") + "/")
        assert response.status_code == plain.status_code


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/api/schema/?format=xml", {}, 404),
        ("/api/schema/", {"HTTP_ACCEPT": "text/html"}, 406),
    ],
)
def test_an_error_of_the_schema_view_is_json_of_the_usual_shape(path, headers, status):
    """The schema's YAML renderer wrote it as ``detail: {string: Not found., code: ...}``."""
    response = Client().get(path, **headers)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert isinstance(body["detail"], str) and isinstance(body["code"], str)


@pytest.fixture
def database_down(monkeypatch):
    """Every statement fails as it does while PostgreSQL is stopped or restarting."""
    from django.db import OperationalError
    from django.db.backends import utils

    def refused(*args, **kwargs):
        raise OperationalError("connection refused: is the server running?")

    monkeypatch.setattr(utils.CursorWrapper, "execute", refused)
    monkeypatch.setattr(utils.CursorWrapper, "executemany", refused)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/tasks/", None),
        ("post", "/api/tasks/", {"task_type": "sum", "input_data": {"numbers": [1]}}),
        ("post", "/api/token/", {"username": "ann", "password": "a-long-Secret-42"}),
        ("get", "/api/admin/stats/", None),
    ],
)
def test_the_database_down_is_a_503_to_try_again(client_for, staff, method, path, body, request):
    """It was a 500 with a traceback in the log for every request."""
    client = client_for(staff)
    request.getfixturevalue("database_down")
    response = getattr(client, method)(path, body, format="json")
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "database_unavailable"
    assert response["Retry-After"] == "5"


@pytest.mark.parametrize(
    "path", ["/admin/", "/admin/tasks/task/", "/admin/dashboard/", "/api/tasks/"]
)
def test_an_admin_page_with_the_database_down_is_a_503_page(client, staff, path, request):
    """It was a 500 (Django's error page, a traceback in the log), where the API says 503;
    the browsable API answered a browser with the JSON."""
    client.force_login(staff)
    request.getfixturevalue("database_down")
    response = client.get(path, HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert response.status_code == 503, response.content[:500]
    assert response["Content-Type"].startswith("text/html")
    assert b"The database is unavailable; try again shortly." in response.content
    assert response["Retry-After"] == "5"


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        ("application/json;q=1, text/html;q=0", "application/json"),
        ("application/json, text/html;q=0.5", "application/json"),
        ("*/*", "application/json"),
        (None, "application/json"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "text/html"),
    ],
)
def test_an_api_answer_with_the_database_down_follows_the_clients_preference(
    client, staff, request, accept, kind
):
    """The page went to any client naming text/html, a q=0 that refuses it included."""
    client.force_login(staff)
    request.getfixturevalue("database_down")
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    response = client.get("/api/tasks/", **headers)
    assert response.status_code == 503
    assert response["Content-Type"].startswith(kind)
    assert "Accept" in response["Vary"]
    assert response["Content-Length"] == str(len(response.content))


def test_metrics_with_the_database_down_is_a_503(client, settings, request):
    settings.METRICS_TOKEN = "m" * 32
    request.getfixturevalue("database_down")
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {'m' * 32}")
    assert response.status_code == 503


def test_a_command_with_the_database_down_says_so_in_one_line(request):
    from django.core.management import CommandError, call_command

    request.getfixturevalue("database_down")
    with pytest.raises(CommandError, match=r"^The database \(.*\) is unavailable: connection"):
        call_command("task_stats")


@pytest.mark.parametrize("coding", ["gzip", "x-unknown", "GZIP, deflate"])
def test_a_body_with_a_content_encoding_is_415_and_creates_nothing(client_for, user, coding):
    """No endpoint decodes a content coding: a gzip body was "JSON parse error - 'utf-8'
    codec can't decode byte 0x8b", and a plain body labelled gzip was taken as if plain."""
    import gzip

    from backend.tasks.models import Task

    body = b'{"task_type": "sum", "input_data": {"numbers": [1]}}'
    client = client_for(user)
    for sent in (gzip.compress(body), body):
        response = client.generic(
            "POST",
            "/api/tasks/",
            sent,
            content_type="application/json",
            HTTP_CONTENT_ENCODING=coding,
        )
        assert response.status_code == 415, response.content
        assert response.json()["code"] == "unsupported_media_type"
        assert "uncompressed" in response.json()["detail"]
    assert not Task.objects.filter(owner=user).exists()
    # Without a body there is nothing to decode; "identity" is no coding at all.
    assert client.get("/api/tasks/", HTTP_CONTENT_ENCODING=coding).status_code == 200
    plain = client.generic(
        "POST",
        "/api/tasks/",
        body,
        content_type="application/json",
        HTTP_CONTENT_ENCODING="identity",
    )
    assert plain.status_code == 201, plain.content


def test_the_schema_reads_as_the_service_answers(api_client):
    """Three places where a strict reader of the schema and the service disagreed:
    ``email: null`` answered where the schema's ``nullable`` stood beside ``oneOf`` without
    a type (OpenAPI 3.0 then lets no null through); defaults on a PATCH's fields, which a
    PATCH leaves as they are (a client filling defaults in re-enabled a paused schedule);
    ``page=last`` answered, but ``page`` documented as an integer."""
    schema = api_client.get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    for name, component in components.items():
        for field_name, field in component.get("properties", {}).items():
            if field.get("nullable") and "oneOf" in field:
                assert any("$ref" in branch for branch in field["oneOf"]), (name, field_name)
            if name.startswith("Patched"):
                assert "default" not in field, (name, field_name)
    email = components["User"]["properties"]["email"]
    assert email["type"] == "string" and email["nullable"] is True
    assert {"format": "email"} in email["anyOf"]
    page = next(
        p for p in schema["paths"]["/api/tasks/"]["get"]["parameters"] if p["name"] == "page"
    )
    assert {"type": "string", "enum": ["last"]} in page["schema"]["oneOf"]


@pytest.mark.parametrize("path", ["/api/tasks/", "/api/files/"])
def test_a_body_in_chunks_is_411_not_read_as_empty(client_for, user, path):
    """Under gunicorn such a body reached the view empty: "No file was submitted." for an
    upload, "This field is required." for a task."""
    response = client_for(user).generic(
        "POST",
        path,
        b'{"task_type": "sum", "input_data": {"numbers": [1]}}',
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
    )
    assert response.status_code == 411
    assert response.json()["code"] == "length_required"
    assert "Content-Length" in response.json()["detail"]


def test_a_500_outside_every_view_carries_its_request_id():
    """Django's handler for an error the middleware itself raised answered without the
    request id README promises with every 500."""
    from django.test import RequestFactory

    from backend.common.views import server_error

    request = RequestFactory().get("/api/tasks/")
    request.request_id = "abc123"
    response = server_error(request)
    assert response.status_code == 500
    assert json.loads(response.content) == {
        "detail": "Internal server error; quote the request id when reporting it.",
        "code": "server_error",
        "request_id": "abc123",
    }
    del request.request_id  # failed before the id was given: none to quote
    assert json.loads(server_error(request).content)["code"] == "server_error"


def test_a_write_that_waited_out_sqlites_busy_timeout_is_busy_not_down(
    client_for, user, monkeypatch
):
    """SQLite's "database is locked" (its busy timeout run out behind other writers) was a
    503 "The database is unavailable", which sent an operator looking for an outage."""
    from django.db import OperationalError
    from django.db.backends import utils

    def locked(*args, **kwargs):
        raise OperationalError("database is locked")

    client = client_for(user)
    monkeypatch.setattr(utils.CursorWrapper, "execute", locked)
    response = client.post(
        "/api/tasks/", {"task_type": "sum", "input_data": {"numbers": [1]}}, format="json"
    )
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "database_busy"
    assert response["Retry-After"] == "5"

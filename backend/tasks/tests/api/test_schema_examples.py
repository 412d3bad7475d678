"""The OpenAPI schema as a guide to creating tasks: a named example per task type for both
create operations, each of which creates a task when sent as-is by a new user, and
``input_data`` described as one of the types' input schemas. Both come from the registry."""

import jsonschema
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS
from rest_framework.test import APIClient

from backend.tasks import types
from backend.tasks.models import Task, TaskStatus
from backend.tasks.types import base
from backend.users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

CREATE_PATHS = ["/api/tasks/", "/api/tasks/create/"]


@pytest.fixture
def schema(api_client) -> dict:
    response = api_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def examples_of(schema: dict, path: str) -> dict:
    return schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"]


def input_data_schema(schema: dict) -> dict:
    return schema["components"]["schemas"]["TaskCreateRequest"]["properties"]["input_data"]


def fresh_client() -> APIClient:
    """A user who just registered: no tasks, no files, no email address."""
    client = APIClient()
    client.force_authenticate(UserFactory(email=""))
    return client


# --- the examples -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", CREATE_PATHS)
def test_each_type_has_a_named_example_sum_first(schema, path):
    examples = examples_of(schema, path)

    assert next(iter(examples)) == "sum"
    assert set(examples) == set(types.names())
    for name, example in examples.items():
        assert example["value"]["task_type"] == name
        assert example["summary"].startswith(f"{name}: ")
        # A newcomer's example: no assignee, no deadline or run_at to get wrong.
        assert set(example["value"]) == {"task_type", "name", "input_data"}


def test_every_type_brings_an_example():
    for kind in types.all_types():
        assert kind.example is not None, kind.name
        assert kind.example_summary, kind.name


@pytest.mark.parametrize("path", CREATE_PATHS)
@pytest.mark.parametrize("name", types.names())
def test_each_example_creates_its_task_as_is(schema, path, name):
    example = examples_of(schema, path)[name]["value"]

    response = fresh_client().post(path, example, format="json")

    if types.get(name).example_needs_setup:
        # It names an object the user must create first (its summary says so): refused
        # for that reason alone.
        assert response.status_code == 400, response.content
        assert set(response.json()) == {"detail", "code", "input_data"}
        assert not Task.objects.exists()
        return
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["task_type"] == name and body["status"] == TaskStatus.PENDING
    inputs = types.get(name).input_serializer(data=example["input_data"])
    assert inputs.is_valid() and body["input_data"] == inputs.validated_data  # as normalised


def test_only_file_types_need_setup():
    assert [k.name for k in types.all_types() if k.example_needs_setup] == ["data_processing"]


def test_the_data_processing_example_works_once_a_file_is_uploaded(schema, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    client = fresh_client()
    upload = SimpleUploadedFile("data.csv", b"a,b\n1,2\n", content_type="text/csv")
    file_id = client.post("/api/files/", {"file": upload}, format="multipart").json()["id"]
    example = examples_of(schema, "/api/tasks/")["data_processing"]["value"]
    assert "upload" in examples_of(schema, "/api/tasks/")["data_processing"]["summary"]

    response = client.post(
        "/api/tasks/",
        {**example, "input_data": {**example["input_data"], "file_id": file_id}},
        format="json",
    )

    assert response.status_code == 201, response.content


def test_a_new_type_brings_its_example_and_input_schema(api_client, monkeypatch):
    class PingInput(base.StrictInputSerializer):
        host_label = base.StrictStringField(max_bytes=10, allow_blank=False)

    kind = base.TaskType(
        name="ping_test",
        description="Pings nothing.",
        input_serializer=PingInput,
        handler=lambda data, ctx: {},
        example={"host_label": "a"},
        example_summary="Ping a",
    )
    monkeypatch.setitem(base._REGISTRY, kind.name, kind)

    schema = api_client.get("/api/schema/", {"format": "json"}).json()

    example = examples_of(schema, "/api/tasks/")["ping_test"]
    assert example["value"]["input_data"] == {"host_label": "a"}
    entry = next(e for e in input_data_schema(schema)["anyOf"] if e["title"] == "ping_test")
    assert entry["properties"]["host_label"]["minLength"] == 1


# --- input_data, per type ---------------------------------------------------------------------


def test_input_data_is_one_of_the_types_input_schemas(schema):
    described = input_data_schema(schema)

    assert "task_type" in described["description"]
    titles = [entry["title"] for entry in described["anyOf"]]
    named = [name for title in titles for name in title.split(", ")]
    assert sorted(named) == types.names()  # every type, once
    assert titles[0] == "sum"
    for entry in described["anyOf"]:
        first = entry["title"].split(", ")[0]
        assert {k: v for k, v in entry.items() if k not in ("title", "description")} == (
            types.get(first).input_schema()
        )
        assert entry["description"].startswith(f"{first}: ")


def test_each_example_input_matches_its_types_schema_and_no_other(schema):
    entries = input_data_schema(schema)["anyOf"]
    # The whole property validates too: anyOf accepts each example's input.
    whole = jsonschema.Draft4Validator(input_data_schema(schema))
    for name, example in examples_of(schema, "/api/tasks/").items():
        value = example["value"]["input_data"]
        matching = [e["title"] for e in entries if jsonschema.Draft4Validator(e).is_valid(value)]
        assert any(name in title.split(", ") for title in matching), (name, matching)
        # Only an empty input fits two types: a manual task's, an email's taking every default.
        shared = value == {} and matching == ["email", "manual"]
        assert len(matching) == 1 or shared, (name, matching)
        whole.validate(value)


def test_a_wrong_input_matches_no_type(schema):
    whole = jsonschema.Draft4Validator(input_data_schema(schema))
    for value in ({"numbers": []}, {"seconds": 0}, {"data": 5}, {"numbers": [1], "x": 1}, []):
        assert not whole.is_valid(value), value


def test_an_email_with_every_default_is_accepted_by_the_server_and_the_schema(schema):
    """The server fills in an email's recipient, subject and body, but the published
    schemas (the email type's and the whole ``input_data``) refused ``{}``."""
    client = APIClient()
    client.force_authenticate(UserFactory(email="ann@example.com"))
    listed = {kind["name"]: kind for kind in client.get("/api/task-types/").json()}
    email = next(e for e in input_data_schema(schema)["anyOf"] if e["title"] == "email")

    response = client.post("/api/tasks/", {"task_type": "email", "input_data": {}}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["input_data"]["to"] == ["ann@example.com"]
    for published in (listed["email"]["input_schema"], email, input_data_schema(schema)):
        jsonschema.Draft4Validator(published).validate({})


def test_schedules_describe_their_template_input_the_same_way(schema):
    template = schema["components"]["schemas"]["ScheduleWriteRequest"]["properties"]["input_data"]
    assert template == input_data_schema(schema)


# --- the schema as a whole --------------------------------------------------------------------


def test_the_schema_validates_without_warnings(tmp_path):
    # drf-spectacular's own check: the document against the OpenAPI 3 JSON schema, and any
    # warning during generation is an error (counted from here: the counts are global).
    GENERATOR_STATS.reset()
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert target.read_text().startswith("openapi: 3.")


def test_the_task_types_say_what_a_left_out_input_is_taken_as(client_for, user):
    """has_header's default (true, SPEC §6) was left out, while delimiter's was shown."""
    listed = client_for(user).get("/api/task-types/").json()
    inputs = {kind["name"]: kind["input_schema"]["properties"] for kind in listed}
    assert inputs["data_processing"]["has_header"]["default"] is True
    assert inputs["data_processing"]["delimiter"]["default"] == ","
    assert inputs["api_integration"]["method"]["default"] == "GET"
    assert inputs["api_integration"]["follow_redirects"]["default"] is False
    assert "default" not in inputs["data_processing"]["file_id"]

"""§8 PostmanCollection.json covers every endpoint: each operation of the OpenAPI schema
(method and path) has at least one request in the collection, and every request goes to
``{{baseUrl}}``. (newman runs the collection against a live server: .ci/newman.sh.)"""

import json
import re
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db

COLLECTION = Path(settings.BASE_DIR) / "PostmanCollection.json"
METHODS = ("get", "put", "post", "patch", "delete", "head", "options", "trace")
VARIABLE = re.compile(r"\{\{[^{}]+\}\}")  # a whole segment that is a Postman variable
PARAMETER = re.compile(r"\{([^{}/]+)\}")  # a path parameter of the schema's templates
UUID = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"


def requests_of(items: list) -> list[dict]:
    """Every request of the collection, folders walked in order."""
    found = []
    for item in items:
        if "item" in item:
            found.extend(requests_of(item["item"]))
        elif "request" in item:
            found.append(item)
    return found


def url_parts(url) -> tuple[list[str], list[str]]:
    """``(host, path segments)`` of a request's URL, without its query string: the URL's
    parts as newman sends them, or its raw text when it has no parts."""
    if isinstance(url, str):
        raw = url.split("#", 1)[0].split("?", 1)[0]
        host, _, path = raw.partition("/")
        return [host], path.split("/")
    return list(url.get("host", [])), list(url.get("path", []))


def path_of(url) -> str:
    return "/" + "/".join(url_parts(url)[1])


def segment_pattern(parameter: dict | None) -> str | None:
    """What a literal segment must look like to be a value of a path parameter (a
    ``{{variable}}`` stands for any value)."""
    schema = (parameter or {}).get("schema", {})
    if "pattern" in schema:
        return schema["pattern"]
    if schema.get("format") == "uuid":
        return UUID
    if schema.get("type") == "integer":
        return r"^-?[0-9]+$"
    return None


def matches(template: str, parameters: dict[str, dict], path: str) -> bool:
    """``path`` (a collection request's, with ``{{var}}`` segments) is a request to the
    schema's path ``template`` (with ``{param}`` segments). A literal segment stands for a
    parameter only where the parameter's schema takes it (``/api/users/me/`` is not a
    request to ``/api/users/{id}/``, whose id is a UUID)."""
    wanted, sent = template.split("/"), path.split("/")
    if len(wanted) != len(sent):
        return False
    for expected, segment in zip(wanted, sent, strict=True):
        parameter = PARAMETER.fullmatch(expected)
        if parameter is None:
            if segment != expected:
                return False
        elif VARIABLE.fullmatch(segment):
            continue
        elif not segment or "{{" in segment:
            return False
        else:
            pattern = segment_pattern(parameters.get(parameter.group(1)))
            if pattern is not None and not re.search(pattern, segment):
                return False
    return True


def schema_operations(schema: dict) -> list[tuple[str, str, dict[str, dict]]]:
    """``(METHOD, path template, {name: path parameter})`` of every operation."""
    operations = []
    for template, item in schema["paths"].items():
        shared = {p["name"]: p for p in item.get("parameters", []) if p.get("in") == "path"}
        for method in METHODS:
            if method not in item:
                continue
            own = {
                p["name"]: p for p in item[method].get("parameters", []) if p.get("in") == "path"
            }
            operations.append((method.upper(), template, {**shared, **own}))
    return operations


@pytest.fixture(scope="module")
def collection() -> dict:
    return json.loads(COLLECTION.read_text(encoding="utf-8"))


@pytest.fixture
def schema(api_client) -> dict:
    response = api_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_every_operation_of_the_schema_has_a_request_in_the_collection(schema, collection):
    sent = {
        (item["request"]["method"].upper(), path_of(item["request"]["url"]))
        for item in requests_of(collection["item"])
    }
    operations = schema_operations(schema)
    assert len(operations) > 30  # the whole schema was read

    missing = [
        f"{method} {template}"
        for method, template, parameters in operations
        if not any(m == method and matches(template, parameters, path) for m, path in sent)
    ]
    assert not missing, f"no request in {COLLECTION.name} for: " + ", ".join(missing)


def test_every_request_goes_to_base_url_as_its_raw_url_says(collection):
    """The parts (which newman sends, and which the test above reads) and the raw URL (which
    Postman shows) agree, and every URL starts from the baseUrl variable."""
    requests = requests_of(collection["item"])
    assert requests
    for item in requests:
        url = item["request"]["url"]
        host, path = url_parts(url)
        assert host == ["{{baseUrl}}"], item["name"]
        if isinstance(url, dict):
            built = "/".join([*host, *path])
            query = [q for q in url.get("query", []) if not q.get("disabled")]
            if query:
                built += "?" + "&".join(
                    q["key"] + ("" if q.get("value") is None else "=" + q["value"]) for q in query
                )
            assert url["raw"] == built, item["name"]


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/api/users/{id}/", "/api/users/{{userIdA}}/", True),
        ("/api/users/{id}/", "/api/users/me/", False),
        ("/api/users/{id}/", "/api/users/{{userIdA}}", False),
        ("/api/tasks/{id}/", "/api/tasks/1/", False),
        (
            "/api/notifications/{id}/",
            "/api/notifications/00000000-0000-4000-8000-000000000000/",
            True,
        ),
        ("/api/tasks/{id}/cancel/", "/api/tasks/{{cancelId}}/cancel/", True),
        ("/api/tasks/{id}/cancel/", "/api/tasks/{{cancelId}}/retry/", False),
        ("/api/files/", "/api/files/", True),
    ],
)
def test_a_request_matches_a_template_as_the_router_would(template, path, expected):
    parameters = {"id": {"name": "id", "in": "path", "schema": {"type": "string", "pattern": UUID}}}
    assert matches(template, parameters, path) is expected

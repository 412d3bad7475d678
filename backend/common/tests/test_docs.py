"""§8 API documentation and browsable entry points, served without any CDN."""

import re

import pytest
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db

SCHEMA_PATHS = ["/api/register/", "/api/token/", "/api/users/me/", "/api/tasks/"]


def html_of(response) -> str:
    assert response["Content-Type"].startswith("text/html")
    return response.content.decode()


def static_assets(html: str) -> list[str]:
    return re.findall(r"""["'](/static/[^"']+)["']""", html)


def assert_no_cdn(html: str) -> None:
    for cdn in ("cdn.jsdelivr", "unpkg", "cdnjs"):
        assert cdn not in html
    # Every script is served by us: our static files, or Swagger UI's set-up script from its
    # own page (no inline script, for the Content-Security-Policy).
    scripts = re.findall(r"""<script[^>]*\ssrc=["']([^"']+)""", html)
    assert scripts
    assert all(src.startswith(("/static/", "/api/docs/?script")) for src in scripts), scripts
    assert not re.search(r"<script(?![^>]*\ssrc=)(?![^>]*application/json)[^>]*>", html), html


def assert_assets_are_bundled(html: str) -> None:
    assets = static_assets(html)
    assert any("drf_spectacular_sidecar" in asset for asset in assets), assets
    for asset in assets:
        assert finders.find(asset.removeprefix("/static/").split("?")[0]), asset


def test_schema_is_openapi_3_with_the_main_paths(api_client):
    response = api_client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path in SCHEMA_PATHS:
        assert path in schema["paths"], path


def response_properties(schema: dict, path: str, status: str) -> set[str]:
    """Property names of the JSON body documented for ``POST path`` answering ``status``."""
    response = schema["paths"][path]["post"]["responses"][status]
    body = response.get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" in body:
        body = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    return set(body.get("properties", {}))


@pytest.fixture
def schema(api_client) -> dict:
    response = api_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize(
    ("path", "status", "fields"),
    [
        ("/api/register/", "201", {"id", "username", "email", "name", "access", "refresh"}),
        ("/api/token/", "200", {"access", "refresh"}),
        ("/api/token/refresh/", "200", {"access", "refresh"}),
    ],
)
def test_schema_documents_auth_responses(schema, path, status, fields):
    assert response_properties(schema, path, status) >= fields


def test_the_schema_is_the_same_whoever_fetches_it(client_for, user, staff, api_client):
    """The user list was documented with the fields of the reader's own answer: staff (and
    Swagger UI in a staff's browser, and CI's fuzzing, which reads it as staff) saw another
    contract than everyone else."""
    schemas = [
        client.get("/api/schema/", {"format": "json"}).json()
        for client in (api_client, client_for(user), client_for(staff))
    ]
    assert schemas[0] == schemas[1] == schemas[2]
    listed = schemas[0]["paths"]["/api/users/"]["get"]["responses"]["200"]
    assert listed["content"]["application/json"]["schema"]["$ref"].endswith("UserPublicList")


INTERNAL = re.compile(r"Serializer|\bDRF\b|simplejwt|backend\.|deep-cop")


def test_the_schema_describes_things_for_its_readers_not_its_code(schema):
    """A serializer's docstring is its schema's description, inherited ones too: the task
    create's said how a mixin copies DRF fields, the token refresh's named a module."""
    leaks = {
        name: component["description"]
        for name, component in schema["components"]["schemas"].items()
        if INTERNAL.search(component.get("description") or "")
    }
    assert not leaks


def test_schema_is_yaml_by_default(api_client):
    response = api_client.get("/api/schema/")

    assert response.status_code == 200
    assert response.content.decode().startswith("openapi: 3.")


def test_swagger_ui_uses_bundled_assets(api_client):
    response = api_client.get("/api/docs/")

    assert response.status_code == 200
    html = html_of(response)
    assert "swagger" in html.lower()
    assert_no_cdn(html)
    assert_assets_are_bundled(html)


def test_redoc_uses_bundled_assets(api_client):
    response = api_client.get("/api/redoc/")

    assert response.status_code == 200
    html = html_of(response)
    assert "redoc" in html.lower()
    assert_no_cdn(html)
    assert_assets_are_bundled(html)


@pytest.mark.parametrize("path", ["/docs", "/docs/"])
def test_docs_redirects_to_swagger_ui(client, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == "/api/docs/"


def test_admin_login_page(client):
    response = client.get("/admin/login/")

    assert response.status_code == 200
    assert 'name="password"' in html_of(response)


def test_browsable_api_root(client_for, user):
    response = client_for(user).get("/api/", HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    html = html_of(response)
    for resource in ("/api/users/", "/api/tasks/"):
        assert resource in html


def test_api_root_lists_resources_as_json(client_for, user):
    response = client_for(user).get("/api/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert {"users", "tasks"} <= set(response.json())


def test_api_root_lists_the_entry_points_to_anyone(api_client):
    response = api_client.get("/api/")
    assert response.status_code == 200
    body = response.json()
    for name in ("tasks", "users", "register", "token", "schema", "swagger", "redoc", "health"):
        assert body[name].startswith("http://testserver/"), name


@pytest.mark.parametrize("suffix", [".json", ".api"])
def test_the_api_root_with_a_format_suffix_lists_the_entry_points(api_client, suffix):
    """/api/.json was a 500: the docs and health have no suffixed route to name."""
    response = api_client.get(f"/api/{suffix}")
    assert response.status_code == 200
    body = response.json() if suffix == ".json" else response.data
    assert body["tasks"] == f"http://testserver/api/tasks{suffix}"
    assert body["register"] == f"http://testserver/api/register{suffix}"
    assert body["schema"] == "http://testserver/api/schema/"
    assert body["health"] == "http://testserver/health/"


def test_front_page_links_everything_and_the_admin_points_there(client):
    html = html_of(client.get("/"))
    for link in ('href="/api/"', 'href="/api/docs/"', 'href="/api/redoc/"', 'href="/admin/"'):
        assert link in html
    assert not re.search(r"""(src|href)=["']https?://""", html)  # nothing from other hosts
    from django.contrib import admin

    assert admin.site.site_url == "/" and admin.site.site_header == "Async Task Manager"


def test_redoc_and_swagger_fetch_nothing_from_other_hosts(client):
    for url in ("/api/redoc/", "/api/docs/"):
        html = html_of(client.get(url))
        assert not re.search(r"""(src|href)=["']https?://""", html), url
        assert "fonts.googleapis" not in html


def test_schema_shows_only_bearer_auth_with_tags_and_summaries(api_client):
    schema = api_client.get("/api/schema/?format=json").json()
    assert list(schema["components"]["securitySchemes"]) == ["jwtAuth"]
    create = schema["paths"]["/api/tasks/"]["post"]
    assert create["tags"] == ["tasks"] and create["summary"]
    assert schema["paths"]["/api/token/"]["post"]["tags"] == ["auth"]
    assert schema["paths"]["/health/"]["get"]["tags"] == ["health"]


def test_schema_text_has_markdown_code_marks_not_docstring_ones(api_client):
    text = api_client.get("/api/schema/?format=json").content.decode()
    assert "``" not in text
    schema = api_client.get("/api/schema/?format=json").json()
    upload = schema["paths"]["/api/files/"]["post"]
    assert "`" not in upload["summary"]


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_options_on_a_docs_page_answers_its_methods(client, path):
    """Swagger UI's page answered OPTIONS with a 500 (its template rendered with DRF's
    OPTIONS description); ReDoc's with the whole page."""
    response = client.options(path, HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert {"GET", "HEAD", "OPTIONS"} <= {m.strip() for m in response["Allow"].split(",")}
    assert response.content == b""


PAGES = ["/", "/health/", "/metrics", "/api/", "/api/schema/", "/api/docs/", "/api/redoc/"]
PAGES += ["/admin/", "/admin/login/", "/admin/dashboard/", "/api-auth/login/", "/docs"]


@pytest.mark.parametrize("method", ["options", "head", "get", "post", "put", "patch", "delete"])
@pytest.mark.parametrize("accept", [None, "text/html", "application/json", "*/*"])
def test_no_page_answers_any_method_with_a_server_error(client, method, accept):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    failed = [
        (path, status)
        for path in PAGES
        if (status := getattr(client, method)(path, **headers).status_code) >= 500
    ]
    assert failed == []

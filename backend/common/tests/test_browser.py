"""The session, session-user and messages middleware step aside for an API request
with a Bearer token that asks for JSON (backend/common/browser.py), and only for it."""

import pytest
from django.conf import settings
from django.core import checks
from django.test import Client, override_settings
from rest_framework_simplejwt.tokens import AccessToken

from backend.common.browser import token_only

pytestmark = pytest.mark.django_db

OURS = {
    "backend.common.browser.SessionMiddleware": "django.contrib.sessions.middleware.SessionMiddleware",
    "backend.common.browser.AuthenticationMiddleware": (
        "django.contrib.auth.middleware.AuthenticationMiddleware"
    ),
    "backend.common.browser.MessageMiddleware": "django.contrib.messages.middleware.MessageMiddleware",
}
DJANGOS_OWN = [OURS.get(path, path) for path in settings.MIDDLEWARE]
SUM = {"task_type": "sum", "input_data": {"numbers": [1, 2]}}
JSON = "application/json"


def bearer(user) -> str:
    return f"Bearer {AccessToken.for_user(user)}"


def create(client: Client, user, **headers):
    return client.post(
        "/api/tasks/", SUM, content_type=JSON, HTTP_AUTHORIZATION=bearer(user), **headers
    )


def test_a_bearer_json_request_skips_them(user):
    response = create(Client(enforce_csrf_checks=True), user, HTTP_ACCEPT=JSON)
    assert response.status_code == 201
    request = response.wsgi_request
    assert not hasattr(request, "session")  # SessionMiddleware stepped aside
    assert not hasattr(request, "_messages")  # MessageMiddleware too
    assert request.user == user  # set by the API's JWT authentication
    assert not response.cookies


def test_it_answers_with_the_same_headers_as_with_djangos_own_chain(user):
    ours = create(Client(enforce_csrf_checks=True), user, HTTP_ACCEPT=JSON)
    with override_settings(MIDDLEWARE=DJANGOS_OWN):
        theirs = create(Client(enforce_csrf_checks=True), user, HTTP_ACCEPT=JSON)
        assert hasattr(theirs.wsgi_request, "session")  # the chain it is compared with
    assert ours.status_code == theirs.status_code == 201
    assert sorted(ours.headers) == sorted(theirs.headers)
    same = set(ours.headers) - {"X-Request-ID", "Location", "Content-Length"}
    assert {h: ours[h] for h in same} == {h: theirs[h] for h in same}
    assert not ours.cookies and not theirs.cookies


def test_a_session_cookie_beside_the_token_changes_nothing(user, other_user):
    """The token decides who asks, with or without a session (as with Django's own chain:
    DRF's JWT authentication comes first), and no CSRF token is needed."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(other_user)
    response = create(client, user, HTTP_ACCEPT=JSON)
    assert response.status_code == 201
    assert response.json()["owner"] == str(user.pk)


def test_the_browsable_api_still_gets_sessions_and_csrf(user):
    """A Bearer request that asks for HTML renders forms with a CSRF token: the cookie
    that goes with it is set, as before."""
    response = Client().get("/api/tasks/", HTTP_AUTHORIZATION=bearer(user), HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert hasattr(response.wsgi_request, "session")
    assert "csrftoken" in response.cookies


def test_a_session_login_is_still_csrf_checked(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/api/tasks/", SUM, content_type=JSON, HTTP_ACCEPT=JSON)
    assert response.status_code == 403
    # A header of another type does not count as a token: still checked.
    response = client.post(
        "/api/tasks/", SUM, content_type=JSON, HTTP_ACCEPT=JSON, HTTP_AUTHORIZATION="Basic eDp5"
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("path", "authorization", "accept", "expected"),
    [
        ("/api/tasks/", "Bearer abc", JSON, True),
        ("/api/tasks/", "Bearer abc", "*/*", True),
        ("/api/tasks/", "Bearer", "", True),  # the JWT authentication refuses it: 401
        ("/api/tasks/", "bearer abc", JSON, True),  # schemes are case-insensitive
        ("/api/tasks/", "Bearer abc", "text/html,application/xhtml+xml", False),
        ("/api/tasks/", "Basic abc", JSON, False),
        ("/api/tasks/", "", JSON, False),
        ("/admin/", "Bearer abc", JSON, False),
        ("/metrics", "Bearer abc", JSON, False),
    ],
)
def test_which_requests_count_as_token_only(rf, path, authorization, accept, expected):
    request = rf.get(path, HTTP_AUTHORIZATION=authorization, HTTP_ACCEPT=accept)
    assert token_only(request) is expected


def test_a_bare_bearer_header_is_refused_by_the_token_check(api_client):
    response = api_client.get("/api/tasks/", HTTP_AUTHORIZATION="Bearer", HTTP_ACCEPT=JSON)
    assert response.status_code == 401


def test_the_admin_checks_find_the_middleware_it_needs():
    errors = [m for m in checks.run_checks() if m.id in {"admin.E408", "admin.E409", "admin.E410"}]
    assert errors == []

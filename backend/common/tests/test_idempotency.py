"""Idempotency-Key on creating POSTs: a retry returns the first response, never a second row."""

import uuid
from datetime import timedelta

import pytest
from django.urls import resolve
from django.utils import timezone

from backend.common.idempotency import idempotency_keys_purge, idempotent
from backend.common.models import IdempotencyKey
from backend.common.tests.concurrency import at_once
from backend.tasks.models import Task

pytestmark = pytest.mark.django_db

BODY = {"task_type": "sum", "input_data": {"numbers": [1, 2]}}


def post(client, body=BODY, key="key-1", path="/api/tasks/"):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(path, body, format="json", headers=headers)


def test_a_retry_returns_the_first_response_without_creating(client_for, user):
    client = client_for(user)
    first = post(client)
    assert first.status_code == 201
    again = post(client)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Task.objects.count() == 1


def test_a_replay_is_the_first_body_byte_for_byte(client_for, user):
    """The body was kept in a jsonb column, which gives the keys back in its own order
    (shortest first): a replay on PostgreSQL began with "id", "url", "name", "error"."""
    client = client_for(user)
    first = post(client)
    again = post(client)
    assert again["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert list(again.json()) == list(first.json())


def test_the_same_key_with_another_body_is_422(client_for, user):
    client = client_for(user)
    assert post(client).status_code == 201
    response = post(client, {"task_type": "sum", "input_data": {"numbers": [3]}})
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert Task.objects.count() == 1


@pytest.mark.parametrize("path", ["/api/tasks", "/api/tasks.json", "/api/tasks/create/"])
def test_a_retry_spelling_the_route_another_way_is_the_same_request(client_for, user, path):
    """Without the trailing slash, with a format suffix, or through the alias of the same
    create: the first response again, nothing created twice."""
    client = client_for(user)
    first = post(client)
    again = post(client, path=path)
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Task.objects.count() == 1


def test_staff_creating_a_user_with_a_key_creates_one(client_for, staff):
    from backend.users.models import User

    body = {"username": "dora", "password": "a-long-Secret-42"}
    client = client_for(staff)
    first = post(client, body, key="new-user", path="/api/users/")
    again = post(client, body, key="new-user", path="/api/users/")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert User.objects.filter(username="dora").count() == 1


def test_keys_are_per_user(client_for, user, other_user):
    assert post(client_for(user)).status_code == 201
    assert post(client_for(other_user)).status_code == 201
    assert Task.objects.count() == 2


def test_without_a_key_every_post_creates(client_for, user):
    client = client_for(user)
    assert post(client, key=None).status_code == 201
    assert post(client, key=None).status_code == 201
    assert Task.objects.count() == 2 and not IdempotencyKey.objects.exists()


def test_an_error_is_not_remembered(client_for, user, settings):
    """A refused request (here the limit) leaves no key: the retry runs again."""
    settings.MAX_ACTIVE_TASKS = 1
    client = client_for(user)
    assert post(client, key="a").status_code == 201
    refused = post(client, key="b")
    assert refused.status_code == 409
    assert not IdempotencyKey.objects.filter(key="b").exists()
    Task.objects.update(status="completed")
    assert post(client, key="b").status_code == 201


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "tab\there", "cl\xe9", "cl\xc3\xa9"],  # the last two: é, Latin-1 and UTF-8
)
def test_a_malformed_key_is_400(client_for, user, key):
    response = post(client_for(user), key=key)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_idempotency_key"
    assert not Task.objects.exists()


def test_expired_keys_are_forgotten(client_for, user, settings):
    client = client_for(user)
    assert post(client).status_code == 201
    IdempotencyKey.objects.update(
        created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL + 1)
    )
    assert post(client, {"task_type": "sum", "input_data": {"numbers": [9]}}).status_code == 201
    assert Task.objects.count() == 2
    IdempotencyKey.objects.update(
        created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL + 1)
    )
    assert idempotency_keys_purge() == 1


def test_the_schema_documents_the_header(api_client):
    schema = api_client.get("/api/schema/?format=json").json()
    params = schema["paths"]["/api/tasks/"]["post"].get("parameters", [])
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in params)


def test_every_idempotent_operation_documents_the_header_and_the_422(api_client):
    """The webhook secret's rotation honoured the header but its schema said nothing of it:
    ``@action`` over ``@idempotent`` drops what the decorator adds to the schema."""
    schema = api_client.get("/api/schema/?format=json").json()
    wrapper = idempotent(lambda self, request: None).__code__  # every wrapper runs this code
    found = set()
    for path, operations in schema["paths"].items():
        callback = resolve(path.replace("{id}", str(uuid.uuid4()))).func
        for method, operation in operations.items():
            name = (getattr(callback, "actions", None) or {}).get(method, method)
            handler = getattr(callback.cls, name, None)
            if getattr(handler, "__code__", None) is not wrapper:
                continue
            found.add((method, path))
            params = operation.get("parameters", [])
            assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in params)
            assert "422" in operation["responses"], (method, path)
    assert ("post", "/api/users/me/webhook-secret/") in found
    assert ("post", "/api/tasks/") in found and ("post", "/api/register/") in found


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_create_exactly_one(client_for, user):
    from rest_framework.test import APIClient

    count = 8

    def one(i):
        client = APIClient()
        client.force_authenticate(user)
        response = post(client, key="race")
        return (response.status_code, response.json())

    results = at_once(one, count)
    assert [code for code, _ in results] == [201] * count
    assert len({body["id"] for _, body in results}) == 1
    assert Task.objects.count() == 1


def test_registering_with_a_key_replays_the_first_answer(api_client):
    """Anonymous: the retry after a lost answer gets the account and its tokens back; the
    same key with another body (another password) is refused, nothing is replayed to it."""
    from backend.users.models import User

    body = {"username": "erin", "password": "a-long-Secret-42"}
    first = post(api_client, body, key="signup-1", path="/api/register/")
    again = post(api_client, body, key="signup-1", path="/api/register/")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert User.objects.filter(username="erin").count() == 1
    other = {"username": "erin", "password": "another-Secret-42"}
    response = post(api_client, other, key="signup-1", path="/api/register/")
    assert response.status_code == 422 and "access" not in response.json()


def test_the_fingerprint_of_a_body_is_keyed_by_the_secret(client_for, user, settings):
    """A body may hold a password: it is not kept as a plain hash, but keyed by the secret
    key, so the same request under another secret key has another fingerprint."""
    assert post(client_for(user)).status_code == 201
    settings.SECRET_KEY = "another-" + settings.SECRET_KEY
    response = post(client_for(user))
    assert response.status_code == 422 and response.json()["code"] == "idempotency_key_reused"


def test_a_key_stored_under_a_replaced_secret_key_still_replays(client_for, user, settings):
    """Rotating the secret key (the old one in SECRET_KEY_FALLBACKS, as Django rotates it)
    keeps the keys stored before it."""
    first = post(client_for(user))
    old_secret = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "another-" + old_secret, [old_secret]
    again = post(client_for(user))
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() and Task.objects.count() == 1


def test_a_key_stored_in_the_earlier_form_still_replays(client_for, user):
    """Keys stored before fingerprints named the view (a SHA-256 of method, path and body)
    are honoured until they expire."""
    import hashlib
    import json

    earlier = {"method": "POST", "path": "/api/tasks/", "data": BODY, "files": {}}
    fingerprint = hashlib.sha256(json.dumps(earlier, sort_keys=True).encode()).hexdigest()
    IdempotencyKey.objects.create(
        user=user,
        key="key-1",
        fingerprint=fingerprint,
        status_code=201,
        response_body=json.dumps({"id": "the first"}),
        created_at=timezone.now(),
    )
    again = post(client_for(user))
    assert again.status_code == 201 and again.json() == {"id": "the first"}
    assert not Task.objects.exists()


def test_the_schema_gives_the_keys_length(api_client):
    """A key of 1 to 255 characters, as the service checks (400 invalid_idempotency_key)."""
    schema = api_client.get("/api/schema/?format=json").json()
    [header] = [
        p
        for p in schema["paths"]["/api/tasks/"]["post"]["parameters"]
        if p["name"] == "Idempotency-Key"
    ]
    assert header["schema"] == {"type": "string", "minLength": 1, "maxLength": 255}

"""§4 authentication: register, token, refresh, verify, logout, throttling, session login."""

import unicodedata
from datetime import timedelta

import jsonschema
import pytest
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from backend.users.models import User
from backend.users.tests.factories import PASSWORD, UserFactory

REGISTER = "/api/register/"
TOKEN = "/api/token/"
REFRESH = "/api/token/refresh/"
VERIFY = "/api/token/verify/"
LOGOUT = "/api/logout/"
ME = "/api/users/me/"

pytestmark = pytest.mark.django_db


def register(client: APIClient, **fields):
    body = {"username": "alice", "password": PASSWORD, **fields}
    return client.post(REGISTER, {k: v for k, v in body.items() if v is not None}, format="json")


def obtain(client: APIClient, **credentials):
    return client.post(TOKEN, credentials, format="json")


def tokens_for(user: User) -> dict:
    response = obtain(APIClient(), username=user.username, password=PASSWORD)
    assert response.status_code == 200, response.data
    return response.data


def bearer(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def refresh(refresh_token: str):
    return APIClient().post(REFRESH, {"refresh": refresh_token}, format="json")


# --- register -----------------------------------------------------------------


def test_register_names_a_field_it_does_not_take(api_client):
    """It dropped them without a word (201): a misspelt "mail" made an account without an
    email; every other write names such a field."""
    response = register(api_client, mail="typo@example.com")
    assert response.status_code == 400
    assert response.json()["mail"] == ["Unknown field."]
    response = register(api_client, is_staff=True, webhook_url="https://hooks.example.com/in")
    assert response.status_code == 400
    body = response.json()
    for field in ("is_staff", "webhook_url"):
        assert body[field] == [
            "Not taken when registering: change it with PATCH /api/users/me/ once registered."
        ]
    assert not User.objects.exists()


def test_register_with_thousands_of_unknown_keys_names_twenty(api_client):
    """Each was named (400,000 keys: 7.5 s and 11.5 MB for anyone, signed in or not)."""
    response = register(api_client, **{f"key{i:05}": 1 for i in range(3_000)})
    assert response.status_code == 400 and len(response.content) < 2_000
    body = response.json()
    assert sum(key.startswith("key") for key in body) == 20
    assert body["non_field_errors"] == ["And 2980 more fields not taken here."]
    assert not User.objects.exists()


@pytest.mark.parametrize("written", ["K\u212a", "\ufb03x"], ids=["Kelvin sign", "ffi ligature"])
def test_a_username_signs_in_as_it_was_written_at_registration(api_client, written):
    """Registering keeps a username in its compatibility form (K + Kelvin sign: "KK"), and
    signing in looked the name up as typed: the name the user chose was refused (401)."""
    body = {"username": written, "password": PASSWORD, "email": "kelvin@example.com"}
    assert api_client.post(REGISTER, body, format="json").status_code == 201
    stored = User.objects.get().username
    assert stored == unicodedata.normalize("NFKC", written) != written
    for name in (written, stored):
        signed_in = api_client.post(
            "/api/token/", {"username": name, "password": PASSWORD}, format="json"
        )
        assert signed_in.status_code == 200, (name, signed_in.content)


def test_register_creates_user_and_returns_a_working_token_pair(api_client):
    response = register(api_client, email="Alice@Example.COM", name="Alice A", password2=PASSWORD)

    assert response.status_code == 201, response.data
    body = response.data
    assert set(body) == {"id", "username", "email", "name", "access", "refresh"}
    user = User.objects.get(username="alice")
    assert body["id"] == str(user.id)
    assert (body["username"], body["name"]) == ("alice", "Alice A")
    assert body["email"].lower() == "alice@example.com"
    assert user.email.lower() == "alice@example.com"
    assert user.check_password(PASSWORD)
    assert user.is_active and not user.is_staff

    me = bearer(body["access"]).get(ME)
    assert me.status_code == 200
    assert me.data["id"] == str(user.id)
    assert refresh(body["refresh"]).status_code == 200


def test_answers_holding_credentials_are_not_to_be_stored(api_client):
    """A token pair (register, token, refresh) and a webhook secret, replays of an
    idempotent request included, say no cache may keep them (RFC 6749 §5.1); other answers
    keep the default."""
    key = {"HTTP_IDEMPOTENCY_KEY": "register-once"}
    body = {"username": "alice", "password": PASSWORD}
    created = api_client.post(REGISTER, body, format="json", **key)
    replayed = api_client.post(REGISTER, body, format="json", **key)
    pair = obtain(api_client, username="alice", password=PASSWORD)
    renewed = refresh(pair.data["refresh"])
    client = bearer(pair.data["access"])
    secret = client.post(f"{ME}webhook-secret/", HTTP_IDEMPOTENCY_KEY="s1")
    secret_again = client.post(f"{ME}webhook-secret/", HTTP_IDEMPOTENCY_KEY="s1")
    for response in (created, replayed, pair, renewed, secret, secret_again):
        assert response.status_code in (200, 201), response.content
        assert response["Cache-Control"] == "no-store" and response["Pragma"] == "no-cache"
    assert secret_again.json() == secret.json()
    assert "no-store" not in client.get(ME).get("Cache-Control", "")


def test_register_never_returns_the_password(api_client):
    response = register(api_client)

    assert response.status_code == 201
    assert PASSWORD not in response.content.decode()
    assert "password" not in response.data


def test_register_email_is_optional_for_several_users(api_client):
    first = register(api_client, username="nomail1")
    second = register(api_client, username="nomail2", email="")

    assert (first.status_code, second.status_code) == (201, 201), (first.data, second.data)
    assert first.data["email"] is None
    assert second.data["email"] is None
    assert User.objects.filter(username__in=["nomail1", "nomail2"], email=None).count() == 2


@pytest.mark.parametrize(
    ("fields", "error_field"),
    [
        ({"password2": "Different-Horse-42"}, "password2"),
        ({"password": "Xy7$abc"}, "password"),  # too short
        ({"password": "password123"}, "password"),  # too common
        ({"password": "8349201957361"}, "password"),  # entirely numeric
        ({"username": "quirkyplatypus", "password": "quirkyplatypus9"}, "password"),  # similar
        ({"username": None}, "username"),
        ({"password": None}, "password"),
        ({"username": "not a valid name!"}, "username"),
        ({"email": "not-an-email"}, "email"),
    ],
)
def test_register_rejects_bad_input_and_writes_nothing(api_client, fields, error_field):
    before = User.objects.count()

    response = register(api_client, **fields)

    assert response.status_code == 400
    assert error_field in response.data
    assert User.objects.count() == before


@pytest.mark.parametrize("field", ["username", "name", "password"])
def test_register_takes_text_as_a_string_only(api_client, field):
    body = {"username": "numbers", "password": "numbers-Secret-42", field: 42}
    response = api_client.post("/api/register/", body, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()[field] == ["A string is required."]
    assert not User.objects.exists()


def test_register_rejects_a_taken_username(api_client):
    UserFactory(username="alice")

    response = register(api_client, username="alice", email="new@example.com")

    assert response.status_code == 400
    assert "username" in response.data
    assert User.objects.filter(username="alice").count() == 1


def test_register_rejects_a_taken_email_in_another_case(api_client):
    UserFactory(username="ann", email="Ann@Example.com")

    response = register(api_client, username="ann2", email="ann@example.COM")

    assert response.status_code == 400
    assert "email" in response.data
    assert not User.objects.filter(username="ann2").exists()


def test_register_accepts_null_email(api_client):
    body = {"username": "alice", "password": PASSWORD, "email": None}

    response = api_client.post(REGISTER, body, format="json")

    assert response.status_code == 201, response.data
    assert User.objects.get(username="alice").email is None


def test_register_tokens_can_be_logged_out(api_client):
    pair = register(api_client).data

    response = bearer(pair["access"]).post(LOGOUT, {"refresh": pair["refresh"]}, format="json")

    assert response.status_code == 205
    assert refresh(pair["refresh"]).status_code == 401


def test_register_password2_is_optional(api_client):
    response = register(api_client)

    assert response.status_code == 201
    assert User.objects.get(username="alice").check_password(PASSWORD)


# --- token --------------------------------------------------------------------


@pytest.fixture
def alice(db):
    return UserFactory(username="alice", email="Alice@Example.com")


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "alice"},
        {"username": "Alice@Example.com"},
        {"username": "ALICE@example.COM"},
        {"email": "alice@example.com"},
        {"email": "ALICE@EXAMPLE.COM"},
        # The one not used, sent empty or null (a form's empty box): it was a 400.
        {"username": "alice", "email": ""},
        {"username": "alice", "email": None},
        {"username": "", "email": "alice@example.com"},
        {"username": None, "email": "alice@example.com"},
    ],
)
def test_token_by_username_or_email_in_any_case(api_client, alice, credentials):
    response = obtain(api_client, password=PASSWORD, **credentials)

    assert response.status_code == 200, response.data
    assert set(response.data) == {"access", "refresh"}
    me = bearer(response.data["access"]).get(ME)
    assert me.status_code == 200
    assert me.data["username"] == "alice"


def test_token_records_last_login(api_client, alice):
    assert alice.last_login is None

    obtain(api_client, username="alice", password=PASSWORD)

    alice.refresh_from_db()
    assert alice.last_login is not None


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "alice", "password": "Wrong-Horse-42"},
        {"email": "alice@example.com", "password": "Wrong-Horse-42"},
        {"username": "nobody", "password": PASSWORD},
        {"email": "nobody@example.com", "password": PASSWORD},
        {"username": "ALICE", "password": PASSWORD},  # usernames are exact
    ],
)
def test_token_with_bad_credentials_is_401(api_client, alice, credentials):
    response = obtain(api_client, **credentials)

    assert response.status_code == 401
    assert response.data["code"] == "no_active_account"
    assert "access" not in response.data


def test_token_for_inactive_user_is_401(api_client):
    UserFactory(username="gone", is_active=False)

    response = obtain(api_client, username="gone", password=PASSWORD)

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("credentials", "error_field"),
    [
        ({}, "password"),
        ({"username": "alice"}, "password"),
        ({"email": "alice@example.com"}, "password"),
        ({"password": PASSWORD}, "username"),
        ({"username": "", "password": PASSWORD}, "username"),
        ({"username": "", "email": None, "password": PASSWORD}, "username"),
    ],
)
def test_token_with_missing_fields_is_400(api_client, alice, credentials, error_field):
    response = obtain(api_client, **credentials)

    assert response.status_code == 400
    assert error_field in response.data


# --- refresh and verify -------------------------------------------------------


def test_refresh_rotates_and_blacklists_the_old_token(alice):
    old = tokens_for(alice)

    response = refresh(old["refresh"])

    assert response.status_code == 200, response.data
    assert set(response.data) == {"access", "refresh"}
    assert response.data["refresh"] != old["refresh"]
    assert bearer(response.data["access"]).get(ME).status_code == 200
    assert refresh(old["refresh"]).status_code == 401
    assert refresh(response.data["refresh"]).status_code == 200


@pytest.mark.parametrize("token", ["garbage", ""])
def test_refresh_with_a_bad_token_is_rejected(token):
    response = refresh(token)

    assert response.status_code == (401 if token else 400)


def test_refresh_with_an_access_token_is_401(alice):
    response = refresh(tokens_for(alice)["access"])

    assert response.status_code == 401


def test_verify_accepts_a_valid_access_token(alice):
    access = tokens_for(alice)["access"]

    response = APIClient().post(VERIFY, {"token": access}, format="json")

    assert response.status_code == 200


def test_the_schema_offers_a_sign_up_and_a_sign_in_that_work_as_they_are(api_client):
    """Swagger UI's "Try it out" offered "string" for every field of the sign-up: a
    password the validators refuse, as the reviewer found. The examples work as sent."""
    schema = api_client.get("/api/schema/", {"format": "json"}).json()

    def example(path):
        content = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        (only,) = content["examples"].values()
        return only["value"]

    registered = api_client.post(REGISTER, example(REGISTER), format="json")
    assert registered.status_code == 201, registered.content
    signed_in = APIClient().post(TOKEN, example(TOKEN), format="json")
    assert signed_in.status_code == 200, signed_in.content
    assert set(signed_in.json()) == {"access", "refresh"}


def test_verify_answers_what_the_schema_says(alice, api_client):
    """The schema said the 200 had no body; it is ``{}``."""
    schema = api_client.get("/api/schema/", {"format": "json"}).json()
    declared = schema["paths"][VERIFY]["post"]["responses"]["200"]["content"]["application/json"]

    response = APIClient().post(VERIFY, {"token": tokens_for(alice)["access"]}, format="json")

    assert response.status_code == 200 and response.json() == {}
    jsonschema.Draft4Validator(declared["schema"]).validate(response.json())
    assert not jsonschema.Draft4Validator(declared["schema"]).is_valid({"token": "x"})


def test_verify_rejects_garbage(api_client):
    response = api_client.post(VERIFY, {"token": "garbage"}, format="json")

    assert response.status_code == 401


# --- logout -------------------------------------------------------------------


def test_logout_blacklists_the_refresh_token(alice):
    pair = tokens_for(alice)
    client = bearer(pair["access"])

    response = client.post(LOGOUT, {"refresh": pair["refresh"]}, format="json")

    assert response.status_code == 205
    assert BlacklistedToken.objects.filter(token__user=alice).count() == 1
    assert refresh(pair["refresh"]).status_code == 401
    # Logging out twice with the same token is a clear client error.
    again = client.post(LOGOUT, {"refresh": pair["refresh"]}, format="json")
    # Its code as the README's (it was ``invalid``, as for a missing field).
    assert again.status_code == 400 and again.json()["code"] == "token_not_valid"


def test_logout_unauthenticated_is_401(alice, api_client):
    pair = tokens_for(alice)

    response = api_client.post(LOGOUT, {"refresh": pair["refresh"]}, format="json")

    assert response.status_code == 401
    assert refresh(pair["refresh"]).status_code == 200


@pytest.mark.parametrize(
    "body, code", [({"refresh": "garbage"}, "token_not_valid"), ({}, "invalid")]
)
def test_logout_with_a_bad_token_is_400(alice, body, code):
    response = bearer(tokens_for(alice)["access"]).post(LOGOUT, body, format="json")

    assert response.status_code == 400
    assert "refresh" in response.data
    assert response.json()["code"] == code


def test_logout_with_an_access_token_as_refresh_is_400(alice):
    access = tokens_for(alice)["access"]

    response = bearer(access).post(LOGOUT, {"refresh": access}, format="json")

    assert response.status_code == 400
    assert "refresh" in response.data


def test_logout_with_someone_elses_refresh_token_is_400(alice, other_user):
    theirs = tokens_for(other_user)

    response = bearer(tokens_for(alice)["access"]).post(
        LOGOUT, {"refresh": theirs["refresh"]}, format="json"
    )

    assert response.status_code == 400
    assert "refresh" in response.data
    assert not BlacklistedToken.objects.exists()
    assert refresh(theirs["refresh"]).status_code == 200


# --- throttling ---------------------------------------------------------------


@pytest.fixture
def three_per_minute(settings):
    settings.THROTTLE_AUTH_RATE = "3/min"


def test_token_is_throttled_past_the_configured_rate(api_client, alice, three_per_minute):
    statuses = [
        obtain(api_client, username="alice", password=PASSWORD).status_code for _ in range(4)
    ]

    assert statuses == [200, 200, 200, 429]


def test_failed_logins_count_towards_the_throttle(api_client, alice, three_per_minute):
    for _ in range(3):
        assert obtain(api_client, username="alice", password="nope").status_code == 401

    response = obtain(api_client, username="alice", password=PASSWORD)

    assert response.status_code == 429
    assert response.data["code"] == "throttled"


@pytest.mark.parametrize("form", ["/api-auth/login/", "/admin/login/"])
def test_the_session_sign_in_forms_are_throttled_too(alice, three_per_minute, form):
    """25 wrong passwords through the browsable API's or the admin's form all got the form
    again, and the right one then signed in: a way around the token endpoint's throttle."""
    client = APIClient()
    for _ in range(3):
        response = client.post(form, {"username": "alice", "password": "nope"})
        assert response.status_code == 200  # the form again, with its error
    response = client.post(form, {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert client.get(ME).status_code in (401, 403)  # not signed in
    assert client.get(form).status_code == 200  # the form is still shown


@pytest.mark.parametrize("form", ["/api-auth/login/", "/admin/login/"])
def test_a_session_of_ones_own_does_not_lift_the_sign_in_forms_throttle(
    alice, user, three_per_minute, form
):
    """With any session (one's own account's), the form let every attempt through: DRF's
    anonymous throttle skips signed-in users, so others' passwords could be guessed
    without a limit."""
    client = APIClient()
    client.force_login(user)
    for _ in range(3):
        assert client.post(form, {"username": "alice", "password": "nope"}).status_code == 200
    response = client.post(form, {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429


def test_the_sign_in_forms_and_the_token_endpoint_share_one_allowance(
    api_client, alice, three_per_minute
):
    for _ in range(3):
        response = APIClient().post("/api-auth/login/", {"username": "alice", "password": "x"})
        assert response.status_code == 200
    assert obtain(api_client, username="alice", password=PASSWORD).status_code == 429


def _together(settings, monkeypatch, moments: list[float]) -> tuple[list[bool], str]:
    """One call to the auth throttle per moment, all at once in threads, from one address:
    which were let through. Every read of the cache is slow, as over a network, which widens
    the races between them."""
    import random
    import threading
    import time

    from django.core.cache import caches
    from django.test import RequestFactory

    from backend.users.api.throttling import AuthRateThrottle

    settings.THROTTLE_AUTH_RATE = "10/min"
    settings.CACHE_TIMEOUT = 30  # the read is slowed to widen the race, not as a slow cache
    backend = type(caches["default"])  # each thread has its own instance of it
    read = backend.get_many

    def slow_read(self, *args, **kwargs):
        value = read(self, *args, **kwargs)
        time.sleep(0.05)
        return value

    monkeypatch.setattr(backend, "get_many", slow_read)
    address = f"198.51.100.{random.randrange(1, 255)}"  # counted apart from other tests
    start, allowed = threading.Barrier(len(moments)), []

    def call(at: float):
        request = RequestFactory().post(TOKEN, REMOTE_ADDR=address)
        throttle = AuthRateThrottle()
        throttle.timer = lambda: at
        start.wait()
        allowed.append(throttle.allow_request(request, None))

    threads = [threading.Thread(target=call, args=(at,)) for at in moments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return allowed, address


def test_calls_arriving_together_get_no_more_than_the_rate(settings, monkeypatch):
    """The throttle read the list of past calls from the cache and wrote it back: calls
    arriving together in several web processes each read the same list, and a quarter more
    than the rate got through (25 of 60 at 20/min)."""
    import time

    from django.test import RequestFactory

    from backend.users.api.throttling import AuthRateThrottle

    at = 10 * (int(time.time()) // 10) + 5  # amid a bucket (10 s at 10/min): counted together
    allowed, address = _together(settings, monkeypatch, [at] * 30)
    assert allowed.count(True) == 10
    refused = AuthRateThrottle()
    refused.timer = lambda: at + 1
    assert not refused.allow_request(RequestFactory().post(TOKEN, REMOTE_ADDR=address), None)
    assert 1 <= refused.wait() <= 70  # a period and one of its six buckets at most


def test_calls_arriving_together_at_a_buckets_turn_get_no_more_than_the_rate(settings, monkeypatch):
    """Half the calls just before a bucket's turn, half just after (as the clock turns
    during a burst, or as one web server's clock runs a little ahead of another's): each call
    read the earlier buckets before it was counted, the later half missed the earlier one's
    calls, and 20 got through at 10/min."""
    import time

    turn = 10 * (int(time.time()) // 10 + 1)
    moments = [turn - 0.01, turn + 0.01] * 15
    allowed, _ = _together(settings, monkeypatch, moments)
    assert allowed.count(True) <= 10  # fewer at worst: one may count another refused just after


def test_no_minute_sees_more_than_the_rate_across_the_turn_of_one(settings):
    """Ten calls just before a minute turns, then more just before the next one turns: all
    within 60 s, so refused (a count of the present minute and a weighted part of the one
    before let nine more through). Once the first ten are over 60 s old, calls go again."""
    import random
    import time

    from django.test import RequestFactory

    from backend.users.api.throttling import AuthRateThrottle

    settings.THROTTLE_AUTH_RATE = "10/min"
    address = f"198.51.100.{random.randrange(1, 255)}"
    start = 60 * (int(time.time()) // 60 + 10)  # a turn of a minute to come

    def call(at: float) -> bool:
        throttle = AuthRateThrottle()
        throttle.timer = lambda: at
        return throttle.allow_request(RequestFactory().post(TOKEN, REMOTE_ADDR=address), None)

    assert all(call(start + 59.9) for _ in range(10))
    assert not call(start + 119.4)
    assert not call(start + 119.8)
    assert call(start + 130.0)


def test_register_is_throttled_past_the_configured_rate(api_client, three_per_minute):
    statuses = [register(api_client, username=f"new{i}").status_code for i in range(4)]

    assert statuses == [201, 201, 201, 429]
    assert not User.objects.filter(username="new3").exists()


def test_throttle_rate_is_read_at_request_time(api_client, alice, settings):
    settings.THROTTLE_AUTH_RATE = "1/min"
    assert obtain(api_client, username="alice", password=PASSWORD).status_code == 200
    assert obtain(api_client, username="alice", password=PASSWORD).status_code == 429

    settings.THROTTLE_AUTH_RATE = "100/min"

    assert obtain(api_client, username="alice", password=PASSWORD).status_code == 200


# --- session login for the browsable API --------------------------------------


def test_session_login_page_is_an_html_form(client):
    response = client.get("/api-auth/login/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "<form" in html
    assert 'name="username"' in html
    assert 'name="password"' in html


def test_session_login_signs_in_the_browsable_api(alice):
    client = APIClient()

    response = client.post("/api-auth/login/", {"username": "alice", "password": PASSWORD})

    assert response.status_code == 302
    assert client.get(ME).data["username"] == "alice"


@pytest.mark.parametrize("next_page", ["", "https://elsewhere.example/"])
def test_session_login_without_a_next_page_lands_on_the_api_root(alice, next_page):
    """The form, sent as the README's link shows it (no ``next``), went to Django's
    /accounts/profile/, a 404 here; so did a foreign ``next``."""
    response = APIClient().post(
        "/api-auth/login/", {"username": "alice", "password": PASSWORD, "next": next_page}
    )
    assert response.status_code == 302 and response["Location"] == "/api/"


def test_session_login_accepts_the_email(alice):
    client = APIClient()

    client.post("/api-auth/login/", {"username": "alice@example.com", "password": PASSWORD})

    assert client.get(ME).status_code == 200


# --- review fixes ---------------------------------------------------------------


def test_verify_of_a_blacklisted_token_is_401(api_client, user):
    pair = tokens_for(user)
    assert bearer(pair["access"]).post(LOGOUT, {"refresh": pair["refresh"]}).status_code == 205
    response = api_client.post(VERIFY, {"token": pair["refresh"]}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_forged_forwarded_for_does_not_dodge_the_throttle(api_client, settings):
    settings.THROTTLE_AUTH_RATE = "3/min"
    codes = [
        api_client.post(
            TOKEN,
            {"username": "nobody", "password": "wrong"},
            format="json",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{i}",
        ).status_code
        for i in range(5)
    ]
    assert codes == [401, 401, 401, 429, 429]


def test_a_username_cannot_shadow_someone_elses_email(api_client):
    UserFactory(username="dave", email="dave@example.com")
    UserFactory(username="frank@example.com", email=None)
    for username in ("dave@example.com", "DAVE@Example.com"):
        response = register(api_client, username=username, email=None)
        assert response.status_code == 400 and "username" in response.json()
    response = register(api_client, username="erin", email="Frank@Example.com")
    assert response.status_code == 400 and "email" in response.json()
    assert not User.objects.filter(username__in=["dave@example.com", "erin"]).exists()


def test_email_login_survives_a_username_equal_to_that_email(api_client):
    # Made directly (as an old row could be): the backend still tells them apart.
    dave = UserFactory(username="dave", email="dave@example.com")
    UserFactory(username="dave@example.com", email=None, password="other-Password-77")
    for credentials in ({"username": "dave@example.com"}, {"email": "DAVE@example.com"}):
        response = obtain(api_client, password=PASSWORD, **credentials)
        assert response.status_code == 200, credentials
        access = response.json()["access"]
        assert bearer(access).get(ME).json()["id"] == str(dave.pk)
    response = obtain(api_client, username="dave@example.com", password="other-Password-77")
    assert response.status_code == 200
    assert bearer(response.json()["access"]).get(ME).json()["username"] == "dave@example.com"


def test_register_without_username_takes_it_from_the_email(api_client):
    """Seed 004's client registers with {email, name, password, password2}."""
    body = {
        "email": "Ann.Lee@example.com",
        "name": "Ann",
        "password": "a-Long-pass-123",
        "password2": "a-Long-pass-123",
    }
    first = api_client.post("/api/register/", body, format="json")
    assert first.status_code == 201, first.content
    assert first.json()["username"] == "Ann.Lee" and first.json()["access"]
    second = api_client.post(
        "/api/register/", {**body, "email": "ann.lee@example.org"}, format="json"
    )
    assert second.status_code == 201 and second.json()["username"] == "ann.lee2"
    response = api_client.post("/api/register/", {"password": "a-Long-pass-123"}, format="json")
    assert response.status_code == 400 and "username" in response.json()


def test_a_username_made_from_the_email_is_made_again_if_taken_meanwhile(db):
    """Two registrations from ann@… at once each made "ann" from a free name, and the
    second was refused: "A user with that username already exists", a field it never sent."""
    from backend.users import services

    made = services.username_from_email("ann@example.com")
    UserFactory(username="ann", email="other@example.com")  # another one, in between
    user = services.user_create(
        username=made, email="ann@example.com", password=PASSWORD, username_derived=True
    )
    assert (made, user.username) == ("ann", "ann2")
    with pytest.raises(DjangoValidationError) as refused:  # a username given is kept
        services.user_create(username="ann", email="ann@elsewhere.example", password=PASSWORD)
    assert list(refused.value.message_dict) == ["username"]


def test_a_password_with_spaces_at_either_end_signs_in_as_it_was_registered(api_client):
    password = "  a-long-Secret-42  "
    assert register(api_client, username="spaced", password=password).status_code == 201
    assert obtain(APIClient(), username="spaced", password=password).status_code == 200
    trimmed = obtain(APIClient(), username="spaced", password=password.strip())
    assert trimmed.status_code == 401


def test_logout_names_a_field_it_does_not_take(alice):
    pair = tokens_for(alice)
    response = bearer(pair["access"]).post(
        LOGOUT, {"refresh": pair["refresh"], "refresh_token": "x"}, format="json"
    )
    assert response.status_code == 400 and "refresh_token" in response.json()
    assert refresh(pair["refresh"]).status_code == 200  # not logged out


def test_a_token_sent_with_another_scheme_is_told_to_use_bearer(api_client, user):
    response = api_client.get("/api/tasks/", HTTP_AUTHORIZATION="Token abc")
    assert response.status_code == 401
    assert "Bearer" in response.json()["detail"] and "'Token'" in response.json()["detail"]


def test_an_expired_access_token_is_refused_saying_so(user):
    """The 401 said "Given token not valid for any token type" and put "Token is expired" in
    a list of simplejwt's own beside the error's detail and code."""
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    response = bearer(str(token)).get("/api/tasks/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Token is expired", "code": "token_not_valid"}
    response = bearer(str(token)[:-2] + "xx").get("/api/tasks/")
    assert response.status_code == 401 and response.json()["code"] == "token_not_valid"
    assert set(response.json()) == {"detail", "code"}


@pytest.mark.parametrize("scheme", ["bearer", "BEARER"])
def test_the_bearer_scheme_in_any_case_is_taken(user, scheme):
    """Schemes are case-insensitive (RFC 9110 §11.1): "bearer <token>" was a 401 saying no
    credentials were given."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {tokens_for(user)['access']}")
    response = client.get("/api/users/me/")
    assert response.status_code == 200 and response.json()["username"] == user.username


def test_a_bearer_token_stops_working_when_its_user_is_deactivated_or_gone(api_client):
    """The user behind an access token is read on every request (one statement): a token
    issued before a deactivation or a deletion is refused from then on."""
    from rest_framework_simplejwt.tokens import AccessToken

    user = UserFactory()
    token = str(AccessToken.for_user(user))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api_client.get("/api/users/me/").status_code == 200
    User.objects.filter(pk=user.pk).update(is_active=False)
    response = api_client.get("/api/users/me/")
    assert response.status_code == 401 and response.json()["code"] == "user_inactive"
    User.objects.filter(pk=user.pk).delete()
    response = api_client.get("/api/users/me/")
    assert response.status_code == 401 and response.json()["code"] == "user_not_found"


@pytest.mark.parametrize("user_id", ["not-a-uuid", None])
def test_a_token_naming_no_user_id_is_401(api_client, user_id):
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(UserFactory())
    if user_id is None:
        del token["user_id"]
    else:
        token["user_id"] = user_id
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = api_client.get("/api/users/me/")
    assert response.status_code == 401 and response.json()["code"] == "token_not_valid"


def test_a_verified_token_is_still_refused_once_it_expires(api_client, monkeypatch):
    """Tokens already verified are kept, but their expiry is checked on every request."""
    from datetime import timedelta

    from rest_framework_simplejwt.tokens import AccessToken
    from rest_framework_simplejwt.utils import aware_utcnow

    from backend.users import authentication

    token = str(AccessToken.for_user(UserFactory()))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api_client.get("/api/users/me/").status_code == 200  # verified, and kept
    assert api_client.get("/api/users/me/").status_code == 200
    later = aware_utcnow() + timedelta(days=1)
    monkeypatch.setattr(authentication, "aware_utcnow", lambda: later)
    monkeypatch.setattr("rest_framework_simplejwt.tokens.aware_utcnow", lambda: later)
    response = api_client.get("/api/users/me/")
    assert response.status_code == 401 and response.json()["code"] == "token_not_valid"


def test_a_tampered_token_is_refused_though_its_original_was_verified(api_client):
    from rest_framework_simplejwt.tokens import AccessToken

    token = str(AccessToken.for_user(UserFactory()))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api_client.get("/api/users/me/").status_code == 200
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")
    assert api_client.get("/api/users/me/").status_code == 401


# --- a refresh token is exchanged once; a new password ends the sessions; verify ------------


@pytest.mark.django_db(transaction=True)
def test_one_refresh_token_sent_many_times_at_once_is_exchanged_once(settings):
    """Twenty requests with the same refresh token, released together, each on its own
    database connection: one new pair, nineteen 401s, and the one new refresh token works."""
    from backend.common.tests.concurrency import at_once

    settings.THROTTLE_AUTH_RATE = "1000/min"
    token = tokens_for(UserFactory())["refresh"]

    def send(i):
        response = refresh(token)
        return (response.status_code, response.data)

    answers = [answer for answer in at_once(send, 20) if isinstance(answer, tuple)]
    granted = [data for code, data in answers if code == 200]
    assert len(answers) == 20 and len(granted) == 1, sorted(code for code, _ in answers)
    assert {code for code, _ in answers} == {200, 401}
    assert refresh(granted[0]["refresh"]).status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("ending", ["password", "deactivation"])
@pytest.mark.parametrize("sent", ["refresh", "sign-in"])
def test_a_refresh_under_way_as_the_sessions_end_does_not_outlive_them(
    settings, monkeypatch, ending, sent
):
    """The account's row written, its tokens not yet revoked (paused there): a refresh, or
    a sign-in with the password as it was, waits for the change to commit, then is refused.
    One that went through meanwhile recorded its new token after the revocation had read
    the open ones: that session outlived the new password, or the deactivation once
    reactivated."""
    import threading

    from django.db import connection, connections

    from backend.users import services, tokens

    if connection.vendor != "postgresql":
        pytest.skip("SQLite's IMMEDIATE transactions already take turns on the database")
    settings.THROTTLE_AUTH_RATE = "1000/min"
    user = UserFactory()
    token = tokens_for(user)["refresh"]
    written, finish = threading.Event(), threading.Event()

    def paused(revoke):
        def revoke_after_a_pause(*args, **kwargs):
            written.set()
            finish.wait(30)
            return revoke(*args, **kwargs)

        return revoke_after_a_pause

    monkeypatch.setattr(tokens, "refresh_tokens_revoke", paused(tokens.refresh_tokens_revoke))
    monkeypatch.setattr(
        services, "refresh_tokens_revoke_all", paused(services.refresh_tokens_revoke_all)
    )

    def end_sessions():
        try:
            if ending == "password":
                changed = User.objects.get(pk=user.pk)
                changed.set_password("another-Secret-42")
                changed.save()
            else:
                services.users_deactivate(queryset=User.objects.filter(pk=user.pk))
        finally:
            connections.close_all()

    answers = []

    def send_refresh():
        try:
            if sent == "refresh":
                answers.append(refresh(token))
            else:
                answers.append(obtain(APIClient(), username=user.username, password=PASSWORD))
        finally:
            connections.close_all()

    ender, refresher = threading.Thread(target=end_sessions), threading.Thread(target=send_refresh)
    ender.start()
    assert written.wait(30)
    refresher.start()
    refresher.join(1)
    waited = refresher.is_alive()
    finish.set()
    ender.join(30)
    refresher.join(30)
    assert waited, f"the {sent} went through while the account's sessions were ending"
    code = "token_not_valid" if sent == "refresh" else "no_active_account"
    assert answers[0].status_code == 401 and answers[0].json()["code"] == code
    if ending == "deactivation":
        User.objects.filter(pk=user.pk).update(is_active=True)
    assert refresh(token).status_code == 401


@pytest.mark.parametrize(("meanwhile", "status"), [("the same password", 200), ("another", 401)])
def test_a_sign_in_takes_a_hash_another_sign_in_upgraded_meanwhile(monkeypatch, meanwhile, status):
    """Django upgrades a password's hash at sign-in, each with a salt of its own: of sign-ins
    at once, one found the row holding another's upgrade, not the hash it had checked, and
    answered 401 to the right password (5 of 48 after a hasher change). A new password
    committed meanwhile still refuses it."""
    from django.contrib.auth.hashers import make_password

    from backend.users.api import serializers

    user = UserFactory()
    authenticate = serializers.authenticate

    def beside_another_sign_in(**credentials):
        checked = authenticate(**credentials)
        password = PASSWORD if meanwhile == "the same password" else "another-Secret-42"
        User.objects.filter(pk=user.pk).update(password=make_password(password))
        return checked

    monkeypatch.setattr(serializers, "authenticate", beside_another_sign_in)
    response = obtain(APIClient(), username=user.username, password=PASSWORD)
    assert response.status_code == status, response.content


@pytest.mark.django_db(transaction=True)
def test_a_logout_and_a_refresh_of_one_token_at_once_never_both_succeed(settings):
    """Logout answered 205 while the refresh beside it got a new pair: the client was told
    its session had ended, and it went on. The insert into the blacklist decides for both."""
    from backend.common.tests.concurrency import at_once

    settings.THROTTLE_AUTH_RATE = "1000/min"
    user = UserFactory()
    for _ in range(8):
        pair = tokens_for(user)

        def send(i, pair=pair):
            if i == 0:
                response = bearer(pair["access"]).post(
                    LOGOUT, {"refresh": pair["refresh"]}, format="json"
                )
            else:
                response = refresh(pair["refresh"])
            code = response.json().get("code") if response.content else None
            return response.status_code, code

        logout, renewal = at_once(send, 2)
        assert (logout, renewal) in (
            ((205, None), (401, "token_not_valid")),
            ((400, "token_not_valid"), (200, None)),
        )


def test_a_refresh_token_used_twice_is_401_the_second_time(alice):
    token = tokens_for(alice)["refresh"]
    assert refresh(token).status_code == 200
    response = refresh(token)
    assert response.status_code == 401 and response.json()["code"] == "token_not_valid"


@pytest.mark.parametrize("how", ["api", "model", "unusable"])
def test_a_new_password_ends_every_refresh_token_of_the_account(alice, other_user, how):
    """From PATCH /api/users/me/, or set_password and save as the admin and changepassword
    do. The access token in use keeps working until it runs out; other accounts keep theirs."""
    first, second, others = tokens_for(alice), tokens_for(alice), tokens_for(other_user)
    if how == "api":
        new = {"password": "another-Secret-42"}
        assert bearer(first["access"]).patch(ME, new, format="json").status_code == 200
    elif how == "model":
        alice.set_password("another-Secret-42")
        alice.save()
    else:  # the admin's "usable password: no", then a new one set later
        alice.set_unusable_password()
        alice.save()
        for pair in (first, second):
            assert refresh(pair["refresh"]).status_code == 401
        alice.set_password("another-Secret-42")
        alice.save()
    for pair in (first, second):
        response = refresh(pair["refresh"])
        assert response.status_code == 401 and response.json()["code"] == "token_not_valid"
    assert bearer(first["access"]).get(ME).status_code == 200
    assert refresh(others["refresh"]).status_code == 200
    assert (
        obtain(APIClient(), username=alice.username, password="another-Secret-42").status_code
        == 200
    )


def test_other_changes_to_an_account_leave_its_sessions(alice):
    pair = tokens_for(alice)
    assert bearer(pair["access"]).patch(ME, {"name": "Alice A."}, format="json").status_code == 200
    assert refresh(pair["refresh"]).status_code == 200


def test_verify_refuses_a_token_of_a_deactivated_or_deleted_user(api_client):
    user = UserFactory()
    access = tokens_for(user)["access"]
    assert api_client.post(VERIFY, {"token": access}, format="json").status_code == 200
    User.objects.filter(pk=user.pk).update(is_active=False)
    response = api_client.post(VERIFY, {"token": access}, format="json")
    assert response.status_code == 401 and response.json()["code"] == "user_inactive"
    User.objects.filter(pk=user.pk).delete()
    response = api_client.post(VERIFY, {"token": access}, format="json")
    assert response.status_code == 401 and response.json()["code"] == "user_not_found"


# --- usernames are unique in any case ---------------------------------------------


def test_register_refuses_a_username_taken_in_another_case(api_client):
    assert register(api_client, username="alice").status_code == 201
    response = register(api_client, username="ALICE")
    assert response.status_code == 400
    assert response.json()["username"] == ["A user with that username already exists."]
    assert User.objects.filter(username__iexact="alice").count() == 1


def test_a_username_cannot_be_changed_to_anothers_in_another_case(api_client):
    UserFactory(username="alice")
    bob = UserFactory(username="bob")
    client = bearer(tokens_for(bob)["access"])
    response = client.patch(ME, {"username": "Alice"}, format="json")
    assert response.status_code == 400 and "username" in response.json()
    assert client.patch(ME, {"username": "Bob"}, format="json").status_code == 200


def test_the_database_refuses_usernames_differing_only_in_case():
    from django.db import IntegrityError, transaction

    UserFactory(username="carol")
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create_user(username="Carol", password=PASSWORD)


def test_a_signed_token_expiring_beyond_pythons_dates_is_401_everywhere(alice, settings):
    """An exp of 10**20 in a token signed with the key (a tool's, say) was an
    OverflowError: a 500 on every endpoint it was sent to, token verify included."""
    import jwt
    from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

    def forged(token_class) -> str:
        claims = dict(token_class.for_user(alice).payload, exp=10**20)
        return jwt.encode(claims, settings.SECRET_KEY, algorithm="HS256")

    access, refresh_token = forged(AccessToken), forged(RefreshToken)
    assert bearer(access).get(ME).status_code == 401
    verify = APIClient().post("/api/token/verify/", {"token": access}, format="json")
    assert verify.status_code == 401
    assert refresh(refresh_token).status_code == 401
    signed_in = bearer(tokens_for(alice)["access"])
    logout = signed_in.post("/api/logout/", {"refresh": refresh_token}, format="json")
    assert logout.status_code == 400


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"jti": None}, "token_not_valid"),
        ({"jti": "x" * 300}, "token_not_valid"),  # longer than the blacklist's column
        ({"jti": "a\x00b"}, "token_not_valid"),  # PostgreSQL's text holds no NUL
        ({"jti": "a\ud800b"}, "token_not_valid"),  # nor UTF-8 a lone surrogate
        ({"user_id": None}, "token_not_valid"),  # an access token of nobody was given out
        ({"user_id": "0b7e4f1c-5d1e-4f7a-9a59-3c3d2f1e0a11"}, "user_not_found"),
        ({"user_id": "not-an-id"}, "user_not_found"),
    ],
    ids=[
        "no id",
        "id too long",
        "id with a NUL",
        "id with a lone surrogate",
        "no user",
        "unknown user",
        "malformed user id",
    ],
)
def test_a_signed_refresh_token_without_id_or_known_user_is_refused(alice, settings, change, code):
    """Each was a 500 (KeyError 'jti'; User.DoesNotExist) on refresh, and on logout."""
    import jwt
    from rest_framework_simplejwt.tokens import RefreshToken

    claims = dict(RefreshToken.for_user(alice).payload, **change)
    claims = {name: value for name, value in claims.items() if value is not None}
    forged = jwt.encode(claims, settings.SECRET_KEY, algorithm="HS256")

    refused = refresh(forged)
    assert (refused.status_code, refused.json()["code"]) == (401, code)
    if "jti" in change:  # verify looked an id up as it was (a NUL in it: a 500)
        verified = APIClient().post("/api/token/verify/", {"token": forged}, format="json")
        assert (verified.status_code, verified.json()["code"]) == (401, "token_not_valid")
    logout = bearer(tokens_for(alice)["access"]).post(
        "/api/logout/", {"refresh": forged}, format="json"
    )
    assert logout.status_code == 400


def test_the_auth_routes_take_the_json_suffix_every_other_route_takes(api_client):
    """/api/register.json, /api/token.json, … answered 404, though the README treats
    ``.json`` as another spelling of a create's route (register honours Idempotency-Key)."""
    body = {"username": "suffix", "password": PASSWORD, "email": "suffix@example.com"}
    registered = api_client.post("/api/register.json", body, format="json")
    assert registered.status_code == 201, registered.content
    pair = api_client.post(
        "/api/token.json", {"username": "suffix", "password": PASSWORD}, format="json"
    ).json()
    verify = api_client.post("/api/token/verify.json", {"token": pair["access"]}, format="json")
    assert verify.status_code == 200
    rotated = api_client.post(
        "/api/token/refresh.json", {"refresh": pair["refresh"]}, format="json"
    )
    assert rotated.status_code == 200
    out = bearer(rotated.json()["access"]).post(
        "/api/logout.json", {"refresh": rotated.json()["refresh"]}, format="json"
    )
    assert out.status_code == 205


def test_a_refused_sign_up_page_does_not_write_the_password_back(api_client, alice):
    """A refused form is shown again as it was sent, but not one with a password: the page
    held value="<the password>"."""
    secret = "S3cret-Pass-xyz!"
    response = api_client.post(
        "/api/register/",
        {"username": alice.username, "email": "new@example.com", "password": secret},
        HTTP_ACCEPT="text/html",
    )
    assert response.status_code == 400
    assert secret not in response.content.decode()

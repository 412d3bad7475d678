"""§4 users: list, create, detail, update, deactivate, /me/ and task statistics."""

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
from django.db import connection
from django.db.models import F
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from backend.tasks.models import TaskStatus
from backend.tasks.tests.factories import TaskFactory
from backend.users import services
from backend.users.models import User
from backend.users.tests.factories import PASSWORD, UserFactory

USERS = "/api/users/"
ME = "/api/users/me/"
STAT_FIELDS = {
    "total_tasks_assigned",
    "total_tasks_pending",
    "total_tasks_running",
    "total_tasks_completed",
    "total_tasks_failed",
    "completion_percentage",
}
PUBLIC_FIELDS = {"id", "username", "name", *STAT_FIELDS}

pytestmark = pytest.mark.django_db


def detail(user: User) -> str:
    return f"{USERS}{user.pk}/"


def by_id(results: list[dict]) -> dict[str, dict]:
    return {row["id"]: row for row in results}


def can_log_in(username: str, password: str) -> bool:
    response = APIClient().post(
        "/api/token/", {"username": username, "password": password}, format="json"
    )
    return response.status_code == 200


def give_tasks(user: User, **counts: int) -> None:
    """``give_tasks(user, completed=1, pending=2)``: tasks assigned to (and owned by) user."""
    for status, count in counts.items():
        for _ in range(count):
            TaskFactory(owner=user, assignee=user, status=TaskStatus(status))


# --- list ---------------------------------------------------------------------


def test_list_is_paginated(client_for, user):
    UserFactory.create_batch(3)

    response = client_for(user).get(USERS, {"page_size": 2})

    assert response.status_code == 200
    assert set(response.data) == {"count", "next", "previous", "results"}
    assert response.data["count"] == 4
    assert len(response.data["results"]) == 2
    assert "page=2" in response.data["next"]
    assert response.data["previous"] is None


def test_staff_list_everyone_with_all_fields(client_for, staff, user):
    inactive = UserFactory(is_active=False)

    response = client_for(staff).get(USERS)

    assert response.status_code == 200
    rows = by_id(response.data["results"])
    assert set(rows) == {str(staff.pk), str(user.pk), str(inactive.pk)}
    row = rows[str(inactive.pk)]
    assert row["email"] == inactive.email
    assert row["is_active"] is False
    assert {"is_staff", "date_joined", "last_login", *STAT_FIELDS} <= set(row)
    assert "password" not in row


def test_non_staff_list_active_users_without_emails(client_for, user, other_user):
    UserFactory(is_active=False)

    response = client_for(user).get(USERS)

    assert response.status_code == 200
    rows = by_id(response.data["results"])
    assert set(rows) == {str(user.pk), str(other_user.pk)}
    for row in rows.values():
        assert set(row) == PUBLIC_FIELDS
    assert "email" not in response.content.decode()
    assert user.email not in response.content.decode()


def test_list_unauthenticated_is_401(api_client, user):
    assert api_client.get(USERS).status_code == 401


# --- create -------------------------------------------------------------------


def test_staff_create_a_user(client_for, staff):
    response = client_for(staff).post(
        USERS,
        {"username": "newbie", "password": PASSWORD, "email": "newbie@example.com", "name": "N"},
        format="json",
    )

    assert response.status_code == 201, response.data
    created = User.objects.get(username="newbie")
    assert response.data["id"] == str(created.pk)
    assert response.data["email"] == "newbie@example.com"
    assert response.data["total_tasks_assigned"] == 0
    assert "password" not in response.data
    assert created.check_password(PASSWORD)
    assert can_log_in("newbie", PASSWORD)


def test_staff_create_a_user_from_an_email_alone(client_for, staff):
    UserFactory(username="user3", email="someone-else@example.com")
    response = client_for(staff).post(
        USERS,
        {"email": "user3@example.com", "name": "User Three", "password": PASSWORD},
        format="json",
    )

    assert response.status_code == 201, response.data
    assert response.data["username"] == "user32"  # the email's local part, made unique
    assert can_log_in("user3@example.com", PASSWORD)


def test_staff_create_a_staff_user_or_an_inactive_one(client_for, staff):
    staff.user_permissions.add(Permission.objects.get(codename="change_user"))
    client = client_for(staff)
    boss = client.post(
        USERS, {"username": "boss", "password": PASSWORD, "is_staff": True}, format="json"
    )
    dormant = client.post(
        USERS, {"username": "dormant", "password": PASSWORD, "is_active": False}, format="json"
    )

    assert (boss.status_code, dormant.status_code) == (201, 201)
    assert (boss.data["is_staff"], dormant.data["is_active"]) == (True, False)
    assert User.objects.get(username="boss").is_staff
    assert not User.objects.get(username="dormant").is_active


MAKE_STAFF_REFUSED = (
    "Only a superuser, or staff allowed to change users in the admin, can make an account staff."
)


def test_staff_without_the_admins_user_rights_cannot_make_an_account_staff(client_for, staff):
    """Staff without any admin permission made accounts staff (new ones, or others'), their
    passwords set, that they could then neither change back nor deactivate: staff status is
    given as the admin gives it, by a superuser or staff allowed to change users."""
    plain = UserFactory()
    before = User.objects.filter(pk=plain.pk).values().get()
    client = client_for(staff)

    created = client.post(
        USERS, {"username": "boss", "password": PASSWORD, "is_staff": True}, format="json"
    )
    promoted = client.patch(
        detail(plain), {"password": "Mine-now-99xx", "is_staff": True}, format="json"
    )

    assert (created.status_code, promoted.status_code) == (403, 403)
    assert created.json()["detail"] == promoted.json()["detail"] == MAKE_STAFF_REFUSED
    assert not User.objects.filter(username="boss").exists()
    assert User.objects.filter(pk=plain.pk).values().get() == before
    # Everything else on an ordinary account stays theirs, an account that is not staff
    # too; a superuser, or staff holding the permission, make accounts staff.
    assert client.patch(detail(plain), {"is_staff": False}, format="json").status_code == 200
    ordinary = {"username": "clerk", "password": PASSWORD, "is_staff": False}
    assert client.post(USERS, ordinary, format="json").status_code == 201
    root = UserFactory(is_staff=True, is_superuser=True)
    assert client_for(root).patch(detail(plain), {"is_staff": True}, format="json").data["is_staff"]
    staff.user_permissions.add(Permission.objects.get(codename="change_user"))
    staff = User.objects.get(pk=staff.pk)  # its permissions read again
    boss = {"username": "boss", "password": PASSWORD, "is_staff": True}
    assert client_for(staff).post(USERS, boss, format="json").status_code == 201


def test_staff_create_stores_notification_settings(client_for, staff):
    """Every writable field the create offers is stored (``webhook_url`` and
    ``notify_email`` were a 500), and the browsable API's form (which sends an empty
    ``webhook_url`` box) creates the user too."""
    made = client_for(staff).post(
        USERS,
        {
            "username": "hooked",
            "password": PASSWORD,
            "webhook_url": "https://hooks.example.com/x",
            "notify_email": ["task.completed", "task.failed"],
        },
        format="json",
    )
    plain = client_for(staff).post(
        USERS, {"username": "formed", "password": PASSWORD, "webhook_url": ""}
    )

    assert (made.status_code, plain.status_code) == (201, 201), (made.data, plain.data)
    hooked = User.objects.get(username="hooked")
    assert hooked.webhook_url == "https://hooks.example.com/x"
    assert hooked.notify_email == ["task.completed", "task.failed"]
    assert made.data["notify_email"] == ["task.completed", "task.failed"]
    assert User.objects.get(username="formed").notify_email == ["task.failed"]


@pytest.mark.parametrize(
    ("body", "error_field"),
    [
        ({"username": "newbie"}, "password"),
        ({"username": "newbie", "password": "12345"}, "password"),
        ({"password": PASSWORD}, "username"),
        ({"username": "newbie", "password": PASSWORD, "email": "TAKEN@example.com"}, "email"),
    ],
)
def test_staff_create_rejects_bad_input(client_for, staff, body, error_field):
    UserFactory(email="taken@example.com")
    before = User.objects.count()

    response = client_for(staff).post(USERS, body, format="json")

    assert response.status_code == 400
    assert error_field in response.data
    assert User.objects.count() == before


def test_non_staff_cannot_create_users(client_for, user):
    response = client_for(user).post(
        USERS, {"username": "newbie", "password": PASSWORD}, format="json"
    )

    assert response.status_code == 403
    assert not User.objects.filter(username="newbie").exists()


def test_options_offers_the_create_form_to_staff_only(client_for, user, staff):
    """OPTIONS (and so the browsable API's form) offered POST to users it refuses."""
    assert "POST" not in client_for(user).options(USERS).json().get("actions", {})
    assert "username" in client_for(staff).options(USERS).json()["actions"]["POST"]
    # The user's own POST routes still offer theirs (and still answer them).
    secret = "/api/users/me/webhook-secret/"
    assert "POST" in client_for(user).options(secret).json()["actions"]
    assert client_for(user).post(secret).status_code == 201


def test_a_webhook_secret_rotation_refuses_a_body_it_does_not_take(client_for, user):
    """{"webhook_secret": "mine"} was ignored (201, a secret the client did not choose),
    and a malformed body too, where every other write names what it does not take."""
    client = client_for(user)
    url = "/api/users/me/webhook-secret/"
    chosen = client.post(url, {"webhook_secret": "mine"}, format="json")
    assert chosen.status_code == 400
    assert chosen.json()["webhook_secret"] == ["This field cannot be changed here."]
    malformed = client.post(url, "{", content_type="application/json")
    assert malformed.status_code == 400 and malformed.json()["code"] == "parse_error"
    user.refresh_from_db()
    assert not user.webhook_secret
    for empty in ({}, None):
        assert client.post(url, empty, format="json").status_code == 201


def test_a_replayed_webhook_secret_is_only_ever_the_current_one(client_for, user):
    """A rotation's answer is replayed for its Idempotency-Key (a retry after a timeout gets
    the secret it missed). Once another rotation replaced that secret, a replay handed back a
    secret that signed nothing (and the idempotency table kept its plain text); a retry of
    the old key must not rotate again either (it broke the secret another client had just
    set up): it is a 409."""
    from backend.common.models import IdempotencyKey

    client = client_for(user)
    url = "/api/users/me/webhook-secret/"
    first = client.post(url, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 201
    replayed = client.post(url, HTTP_IDEMPOTENCY_KEY="k-1")
    assert replayed["Idempotent-Replayed"] == "true"
    assert replayed.json() == first.json()

    second = client.post(url, HTTP_IDEMPOTENCY_KEY="k-2")
    assert second.status_code == 201
    stored = IdempotencyKey.objects.filter(user=user).values_list("response_body", flat=True)
    assert not any(first.json()["webhook_secret"] in (body or "") for body in stored)

    late = client.post(url, HTTP_IDEMPOTENCY_KEY="k-1")
    assert late.status_code == 409
    assert late.json()["code"] == "secret_replaced"
    user.refresh_from_db()
    assert user.webhook_secret == second.json()["webhook_secret"]  # not rotated again
    assert client.post(url, HTTP_IDEMPOTENCY_KEY="k-2").json() == second.json()

    third = client.post(url)  # no key: a rotation
    assert third.status_code == 201
    assert client.post(url, HTTP_IDEMPOTENCY_KEY="k-2").status_code == 409
    user.refresh_from_db()
    assert user.webhook_secret == third.json()["webhook_secret"]


# --- detail and update --------------------------------------------------------


def test_non_staff_cannot_see_another_user(client_for, user, other_user):
    response = client_for(user).get(detail(other_user))

    assert response.status_code == 403
    assert response.data["code"] == "permission_denied"
    assert other_user.email not in response.content.decode()


def test_non_staff_cannot_change_another_user(client_for, user, other_user):
    response = client_for(user).patch(detail(other_user), {"name": "Hacked"}, format="json")

    assert response.status_code == 403
    other_user.refresh_from_db()
    assert other_user.name != "Hacked"


def test_user_sees_own_detail(client_for, user):
    response = client_for(user).get(detail(user))

    assert response.status_code == 200
    assert response.data["email"] == user.email
    assert set(response.data) >= STAT_FIELDS


def test_staff_see_and_change_anyone(client_for, staff, user):
    client = client_for(staff)

    assert client.get(detail(user)).data["email"] == user.email
    response = client.patch(detail(user), {"name": "Renamed", "is_active": False}, format="json")

    assert response.status_code == 200
    user.refresh_from_db()
    assert (user.name, user.is_active) == ("Renamed", False)


# What staff without the admin's rights tried on an account they must not take over.
TAKEOVER_ATTEMPTS = pytest.mark.parametrize(
    ("method", "body"),
    [
        ("patch", {"password": "Taken-over-by-staff-99"}),
        ("patch", {"email": "attacker@example.net"}),
        ("patch", {"is_staff": False}),
        ("delete", None),
    ],
)


@TAKEOVER_ATTEMPTS
def test_staff_who_are_not_superusers_cannot_change_a_superuser(client_for, staff, method, body):
    """A staff account without the admin's permissions took a superuser over by its
    password (and could redirect its mail, or lock it out of the admin)."""
    root = UserFactory(is_staff=True, is_superuser=True)
    before = User.objects.filter(pk=root.pk).values().get()

    response = getattr(client_for(staff), method)(detail(root), body, format="json")

    assert response.status_code == 403
    assert response.json()["detail"] == (
        "Only a superuser can change or deactivate a superuser's account."
    )
    assert User.objects.filter(pk=root.pk).values().get() == before
    assert client_for(staff).get(detail(root)).status_code == 200  # reading stays open


@TAKEOVER_ATTEMPTS
def test_staff_without_the_admins_user_rights_cannot_change_another_staff_account(
    client_for, staff, method, body
):
    """Staff without any admin permission set the password of a staff account holding all of
    them, then signed in to the admin as it. Another staff member's account is changed by a
    superuser or by staff allowed to change users in the admin (as the admin itself asks)."""
    from django.contrib.auth.models import Permission

    ops = UserFactory(is_staff=True)
    ops.user_permissions.set(Permission.objects.all())
    before = User.objects.filter(pk=ops.pk).values().get()

    response = getattr(client_for(staff), method)(detail(ops), body, format="json")

    assert response.status_code == 403
    assert response.json()["detail"] == (
        "Only a superuser, or staff allowed to change users in the admin, can change or "
        "deactivate another staff member's account, or one holding admin permissions."
    )
    assert User.objects.filter(pk=ops.pk).values().get() == before
    assert client_for(staff).get(detail(ops)).status_code == 200  # reading stays open
    # Staff holding that permission may, as in the admin; and anyone changes an ordinary
    # account (or their own).
    allowed = getattr(client_for(ops), method)(detail(staff), body, format="json")
    assert allowed.status_code in (200, 204)
    plain = UserFactory()
    assert client_for(ops).patch(detail(plain), {"name": "N"}, format="json").status_code == 200


@pytest.mark.parametrize("held", ["own", "group"])
def test_staff_without_the_admins_user_rights_cannot_take_over_an_account_holding_permissions(
    client_for, staff, held
):
    """An account that is not staff but holds admin permissions (its own or a group's) had
    its password set and was made staff by staff without any permission, who then had
    every permission through it."""
    from django.contrib.auth.models import Group, Permission

    carl = UserFactory()
    if held == "own":
        carl.user_permissions.set(Permission.objects.all())
    else:
        group = Group.objects.create(name="operators")
        group.permissions.set(Permission.objects.all())
        carl.groups.add(group)
    before = User.objects.filter(pk=carl.pk).values().get()
    client = client_for(staff)

    response = client.patch(
        detail(carl), {"password": "Taken-over-99xx", "is_staff": True}, format="json"
    )
    assert response.status_code == 403
    assert client.delete(detail(carl)).status_code == 403
    assert User.objects.filter(pk=carl.pk).values().get() == before
    plain = UserFactory()  # an account without permissions stays theirs to manage
    reset = client.patch(detail(plain), {"password": "Reset-by-staff-99"}, format="json")
    assert reset.status_code == 200
    # A group that gives no permission makes no account privileged.
    member = UserFactory()
    member.groups.add(Group.objects.create(name="readers"))
    assert client.patch(detail(member), {"name": "M"}, format="json").status_code == 200
    assert client.delete(detail(member)).status_code == 204


def test_a_superuser_changes_another_superuser_and_anyone_changes_themselves(client_for):
    root, other_root = UserFactory.create_batch(2, is_staff=True, is_superuser=True)

    changed = client_for(root).patch(detail(other_root), {"name": "Renamed"}, format="json")
    own = client_for(other_root).patch(detail(other_root), {"name": "Mine"}, format="json")

    assert (changed.status_code, own.status_code) == (200, 200)
    other_root.refresh_from_db()
    assert other_root.name == "Mine"


def test_a_user_who_is_not_staff_learns_nothing_of_who_is_a_superuser(client_for, user):
    root = UserFactory(is_staff=True, is_superuser=True)
    plain = UserFactory()

    answers = [
        client_for(user).patch(detail(target), {"name": "x"}, format="json").json()
        for target in (root, plain)
    ]

    assert answers[0] == answers[1]


def test_user_patches_own_name_and_email(client_for, user):
    response = client_for(user).patch(
        detail(user), {"name": "New Name", "email": "fresh@example.com"}, format="json"
    )

    assert response.status_code == 200, response.data
    assert (response.data["name"], response.data["email"]) == ("New Name", "fresh@example.com")
    user.refresh_from_db()
    assert (user.name, user.email) == ("New Name", "fresh@example.com")


def test_patch_email_taken_in_another_case_is_400(client_for, user):
    UserFactory(email="Ann@Example.com")
    old_email = user.email

    response = client_for(user).patch(detail(user), {"email": "ann@example.COM"}, format="json")

    assert response.status_code == 400
    assert "email" in response.data
    user.refresh_from_db()
    assert user.email == old_email


def test_email_changes_are_throttled_per_account(client_for, user, settings):
    """Each answers whether an address is registered (emails are hidden from others)."""
    settings.THROTTLE_AUTH_RATE = "3/min"
    UserFactory(email="taken@example.com")
    client = client_for(user)

    tries = [
        client.patch(detail(user), {"email": f"guess{n}@example.com"}, format="json")
        for n in range(2)
    ] + [client.patch(ME, {"email": "taken@example.com"}, format="json") for _ in range(2)]

    assert [r.status_code for r in tries] == [200, 200, 400, 429]
    assert "Retry-After" in tries[-1]
    # Changes without an email are not counted.
    assert client.patch(ME, {"name": "Still Me"}, format="json").status_code == 200


def test_username_changes_are_throttled_per_account_too(client_for, user, settings):
    """A username that is another user's email is refused saying so: username PATCHes
    tried addresses without a limit."""
    settings.THROTTLE_AUTH_RATE = "3/min"
    UserFactory(email="taken@example.com")
    client = client_for(user)
    tries = [client.patch(ME, {"username": f"guess{n}@example.com"}, format="json") for n in (1, 2)]
    tries += [client.patch(ME, {"username": "taken@example.com"}, format="json") for _ in (1, 2)]
    assert [r.status_code for r in tries] == [200, 200, 400, 429]


def test_only_a_new_email_or_username_by_a_user_is_counted(client_for, user, staff, settings):
    """A whole profile sent back to change the name (the browsable API's raw form holds
    every field) was counted as an address tried; so was every edit by staff, who see
    every email anyway."""
    settings.THROTTLE_AUTH_RATE = "2/min"
    client = client_for(user)
    same = {"username": user.username.upper(), "email": user.email, "name": "x"}
    assert [client.patch(ME, same, format="json").status_code for _ in range(4)] == [200] * 4
    others = UserFactory.create_batch(3)
    edits = [
        client_for(staff).patch(detail(other), {"username": f"renamed{n}"}, format="json")
        for n, other in enumerate(others)
    ]
    assert [r.status_code for r in edits] == [200] * 3


def test_a_user_without_an_email_adds_one(client_for):
    """It was a 500: the throttle compared the new address with the account's, None."""
    user = UserFactory(email=None)
    response = client_for(user).patch(ME, {"email": "eve@example.com"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["email"] == "eve@example.com"


def test_no_email_sent_back_as_none_is_not_counted(client_for, settings):
    """A profile without an email, sent back as it is ("email": null), was counted as an
    address tried."""
    settings.THROTTLE_AUTH_RATE = "2/min"
    client = client_for(UserFactory(email=None))
    body = {"email": None, "name": "renamed"}
    assert [client.patch(ME, body, format="json").status_code for _ in range(4)] == [200] * 4


def test_patch_own_email_in_another_case_is_allowed(client_for, user):
    response = client_for(user).patch(detail(user), {"email": user.email.upper()}, format="json")

    assert response.status_code == 200, response.data


def test_patch_taken_username_is_400(client_for, user, other_user):
    response = client_for(user).patch(
        detail(user), {"username": other_user.username}, format="json"
    )

    assert response.status_code == 400
    assert "username" in response.data


def test_non_staff_cannot_change_their_own_flags(client_for, user):
    response = client_for(user).patch(
        detail(user), {"is_staff": True, "is_active": False, "name": "Still Me"}, format="json"
    )

    # Refused with the fields named, not silently ignored; nothing changes.
    assert response.status_code == 400
    assert set(response.json()) >= {"is_staff", "is_active", "detail", "code"}
    user.refresh_from_db()
    assert (user.is_staff, user.is_active) == (False, True) and user.name != "Still Me"


def test_patch_password_changes_the_login(client_for, user):
    new_password = "Brand-New-Pass-77"

    response = client_for(user).patch(detail(user), {"password": new_password}, format="json")

    assert response.status_code == 200, response.data
    assert "password" not in response.data
    assert can_log_in(user.username, new_password)
    assert not can_log_in(user.username, PASSWORD)


@pytest.mark.parametrize("weak", ["short", "password", "1234567890"])
def test_patch_weak_password_is_400(client_for, user, weak):
    response = client_for(user).patch(detail(user), {"password": weak}, format="json")

    assert response.status_code == 400
    assert "password" in response.data
    assert can_log_in(user.username, PASSWORD)


def test_patch_password_similar_to_new_username_is_400(client_for, user):
    response = client_for(user).patch(
        detail(user), {"username": "zanzibarfox", "password": "zanzibarfox1"}, format="json"
    )

    assert response.status_code == 400
    assert "password" in response.data
    user.refresh_from_db()
    assert user.username != "zanzibarfox"


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_non_uuid_id_is_404(client_for, staff, method):
    response = getattr(client_for(staff), method)(f"{USERS}not-a-uuid/")

    assert response.status_code == 404


def test_unknown_uuid_is_404(client_for, staff):
    response = client_for(staff).get(f"{USERS}{uuid.uuid4()}/")

    assert response.status_code == 404


def test_non_staff_get_inactive_user_is_404(client_for, user):
    inactive = UserFactory(is_active=False)

    assert client_for(user).get(detail(inactive)).status_code == 404


# --- delete (deactivate) ------------------------------------------------------


def test_staff_delete_deactivates_and_keeps_the_user(client_for, staff, user):
    give_tasks(user, completed=1)

    response = client_for(staff).delete(detail(user))

    assert response.status_code == 204
    user.refresh_from_db()
    assert user.is_active is False
    assert user.assigned_tasks.count() == 1
    assert not can_log_in(user.username, PASSWORD)
    listed = client_for(staff).get(USERS).data["results"]
    assert by_id(listed)[str(user.pk)]["is_active"] is False


def test_deactivated_users_tokens_stop_working(client_for, staff, user):
    pair = (
        APIClient()
        .post("/api/token/", {"username": user.username, "password": PASSWORD}, format="json")
        .data
    )
    client_for(staff).delete(detail(user))

    signed_in = APIClient()
    signed_in.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    assert signed_in.get(ME).status_code == 401
    refreshed = APIClient().post("/api/token/refresh/", {"refresh": pair["refresh"]}, format="json")
    assert refreshed.status_code == 401


def token_pair(user) -> dict:
    return (
        APIClient()
        .post("/api/token/", {"username": user.username, "password": PASSWORD}, format="json")
        .data
    )


@pytest.mark.parametrize("how", ["delete", "patch", "admin action"])
def test_a_refresh_token_from_before_a_deactivation_stays_dead_after_reactivation(
    client_for, staff, user, how
):
    """It worked again once the account was active again; so did a browser session."""
    pair = token_pair(user)
    browser = Client()
    browser.force_login(user)
    assert browser.get(ME, HTTP_ACCEPT="application/json").status_code == 200
    if how == "delete":
        client_for(staff).delete(detail(user))
    elif how == "patch":
        response = client_for(staff).patch(detail(user), {"is_active": False}, format="json")
        assert response.status_code == 200
    else:
        services.users_deactivate(queryset=User.objects.filter(is_active=True), actor=staff)
    assert User.objects.get(pk=user.pk).is_active is False
    reactivated = client_for(staff).patch(detail(user), {"is_active": True}, format="json")
    assert reactivated.status_code == 200

    refreshed = APIClient().post("/api/token/refresh/", {"refresh": pair["refresh"]}, format="json")
    assert refreshed.status_code == 401
    assert token_pair(user)["refresh"]  # signing in again works
    assert User.objects.get(pk=staff.pk).is_active
    assert browser.get(ME, HTTP_ACCEPT="application/json").status_code in (401, 403)
    sessions = [s.get_decoded().get("_auth_user_id") for s in Session.objects.all()]
    assert str(user.pk) not in sessions


@pytest.mark.parametrize("how", ["delete", "patch", "admin action", "save"])
def test_an_access_token_from_before_a_deactivation_stays_dead_after_reactivation(
    client_for, staff, user, how
):
    """It was refused while the account was inactive, and worked again for its remaining
    minutes once the account was reactivated. A token issued after the reactivation works,
    and so do its refresh and the access token that gives."""
    old = token_pair(user)["access"]
    if how == "delete":
        assert client_for(staff).delete(detail(user)).status_code == 204
    elif how == "patch":
        response = client_for(staff).patch(detail(user), {"is_active": False}, format="json")
        assert response.status_code == 200
    elif how == "admin action":
        services.users_deactivate(queryset=User.objects.filter(pk=user.pk), actor=staff)
    else:  # the admin's change form, a shell
        user.is_active = False
        user.save(update_fields=["is_active"])
    reactivated = client_for(staff).patch(detail(user), {"is_active": True}, format="json")
    assert reactivated.status_code == 200

    signed_in = APIClient()
    signed_in.credentials(HTTP_AUTHORIZATION=f"Bearer {old}")
    refused = signed_in.get(ME)
    assert refused.status_code == 401
    assert refused.json()["code"] == "token_not_valid"
    verified = APIClient().post("/api/token/verify/", {"token": old}, format="json")
    assert verified.status_code == 401

    pair = token_pair(user)
    signed_in.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    assert signed_in.get(ME).status_code == 200
    refreshed = APIClient().post("/api/token/refresh/", {"refresh": pair["refresh"]}, format="json")
    assert refreshed.status_code == 200
    signed_in.credentials(HTTP_AUTHORIZATION=f"Bearer {refreshed.json()['access']}")
    assert signed_in.get(ME).status_code == 200


def test_a_sign_in_meeting_a_deactivation_and_reactivation_gives_working_tokens(user, monkeypatch):
    """Both committed while the password was hashed: the user was read before them, and
    the tokens carried the count from before, each refused at every use (and the refresh
    token, issued after the revocation, kept giving such access tokens)."""
    from backend.users.api import serializers as user_serializers

    real = user_serializers.authenticate

    def read_before_the_change(**kwargs):
        found = real(**kwargs)
        User.objects.filter(pk=found.pk).update(deactivations=F("deactivations") + 1)
        return found

    monkeypatch.setattr(user_serializers, "authenticate", read_before_the_change)
    pair = token_pair(user)
    signed_in = APIClient()
    signed_in.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    assert signed_in.get(ME).status_code == 200
    refreshed = APIClient().post("/api/token/refresh/", {"refresh": pair["refresh"]}, format="json")
    assert refreshed.status_code == 200


def test_a_refresh_token_of_an_earlier_count_is_refused(user):
    """One left open across a deactivation (say, recorded as it was revoked) gave access
    tokens refused at every use: it is refused itself, 401."""
    from backend.users.tokens import SingleUseRefreshToken

    refresh = str(SingleUseRefreshToken.for_user(user))
    User.objects.filter(pk=user.pk).update(deactivations=F("deactivations") + 1)
    response = APIClient().post("/api/token/refresh/", {"refresh": refresh}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_a_registration_token_carries_the_count_and_works(client):
    response = client.post(
        "/api/register/",
        {"username": "newcomer", "password": "a-Good-Secret-42"},
        format="json",
    )
    assert response.status_code == 201, response.content
    signed_in = APIClient()
    signed_in.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    assert signed_in.get(ME).status_code == 200


@pytest.mark.parametrize("target", ["self", "other"])
def test_non_staff_cannot_delete(client_for, user, other_user, target):
    victim = user if target == "self" else other_user

    response = client_for(user).delete(detail(victim))

    assert response.status_code == 403
    assert response.json()["detail"] == "Only staff can deactivate an account."
    victim.refresh_from_db()
    assert victim.is_active is True


# --- /me/ ---------------------------------------------------------------------


def test_me_returns_own_profile(client_for, user):
    response = client_for(user).get(ME)

    assert response.status_code == 200
    assert response.data["id"] == str(user.pk)
    assert (response.data["username"], response.data["email"]) == (user.username, user.email)
    assert set(response.data) >= STAT_FIELDS
    assert "password" not in response.data


def test_me_patch_updates_the_profile(client_for, user):
    response = client_for(user).patch(ME, {"name": "Me Myself"}, format="json")

    assert response.status_code == 200, response.data
    assert response.data["name"] == "Me Myself"
    user.refresh_from_db()
    assert user.name == "Me Myself"


@pytest.mark.parametrize(
    "body", [{"name": 123}, {"name": 1e300}, {"username": 7}, {"password": 12345678901234}]
)
def test_a_profiles_text_is_a_string_not_a_number(client_for, user, body):
    """{"name": 123} became the name "123" (and 1e400 "inf"), where a task's name is refused."""
    before = (user.name, user.username, user.password)
    response = client_for(user).patch(ME, body, format="json")

    assert response.status_code == 400, response.json()
    (field,) = body
    assert response.json()[field] == ["A string is required."]
    user.refresh_from_db()
    assert (user.name, user.username, user.password) == before


@pytest.mark.parametrize("body", [{"is_staff": True}, {"name": "x", "nickname": "y"}])
def test_me_patch_names_the_fields_it_cannot_take(client_for, user, body):
    response = client_for(user).patch(ME, body, format="json")

    assert response.status_code == 400
    refused = set(body) - {"name"}
    assert refused <= set(response.json()) and response.json()["code"] == "invalid"
    user.refresh_from_db()
    assert user.is_staff is False and user.name != "x"


def test_me_patch_can_clear_the_email(client_for, user):
    response = client_for(user).patch(ME, {"email": ""}, format="json")

    assert response.status_code == 200, response.data
    user.refresh_from_db()
    assert user.email is None


def test_me_patch_rejects_taken_email(client_for, user, other_user):
    response = client_for(user).patch(ME, {"email": other_user.email.upper()}, format="json")

    assert response.status_code == 400
    assert "email" in response.data


def test_me_patch_password_changes_the_login(client_for, user):
    response = client_for(user).patch(ME, {"password": "Another-Good-Pass-9"}, format="json")

    assert response.status_code == 200, response.data
    assert can_log_in(user.username, "Another-Good-Pass-9")


def test_me_unauthenticated_is_401(api_client):
    assert api_client.get(ME).status_code == 401
    assert api_client.patch(ME, {"name": "x"}, format="json").status_code == 401


# --- statistics ---------------------------------------------------------------


def test_a_notify_email_list_past_its_length_is_refused_as_such(client_for, user):
    """Each of its items was checked, and each bad one answered (200,000: 10 s, 8.3 MB)."""
    response = client_for(user).patch(ME, {"notify_email": ["x"] * 20_000}, format="json")
    assert response.status_code == 400 and len(response.content) < 500
    assert response.json()["notify_email"] == ["Ensure this field has no more than 4 elements."]


def test_statistics_on_me(client_for, user, other_user):
    give_tasks(user, completed=1, pending=1, running=1, failed=1, cancelled=1, scheduled=1)
    give_tasks(other_user, completed=3)
    TaskFactory(owner=user, assignee=other_user, status=TaskStatus.COMPLETED)

    data = client_for(user).get(ME).data

    assert {field: data[field] for field in STAT_FIELDS} == {
        "total_tasks_assigned": 6,
        "total_tasks_pending": 1,
        "total_tasks_running": 1,
        "total_tasks_completed": 1,
        "total_tasks_failed": 1,
        "completion_percentage": 16.7,
    }


def test_completion_percentage_has_one_decimal(client_for, user):
    give_tasks(user, completed=1, pending=2)

    data = client_for(user).get(ME).data

    assert data["total_tasks_assigned"] == 3
    assert data["completion_percentage"] == 33.3


def test_completion_percentage_rounds_a_half_up(client_for, user):
    """2 of 32 is 6.25 %: Python's round() gave 6.2 (a half to the even tenth)."""
    give_tasks(user, completed=2, pending=30)
    assert client_for(user).get(ME).data["completion_percentage"] == 6.3


def test_completion_percentage_is_zero_without_tasks(client_for, user):
    data = client_for(user).get(ME).data

    assert data["total_tasks_assigned"] == 0
    assert data["completion_percentage"] == 0.0


def test_statistics_in_the_list(client_for, user, other_user):
    give_tasks(user, completed=2, failed=1)
    give_tasks(other_user, completed=2)

    rows = by_id(client_for(user).get(USERS).data["results"])

    mine, theirs = rows[str(user.pk)], rows[str(other_user.pk)]
    assert (mine["total_tasks_assigned"], mine["total_tasks_completed"]) == (3, 2)
    assert (mine["total_tasks_failed"], mine["completion_percentage"]) == (1, 66.7)
    assert (theirs["total_tasks_assigned"], theirs["completion_percentage"]) == (2, 100.0)


def test_statistics_on_detail_after_patch(client_for, user):
    give_tasks(user, running=2)

    data = client_for(user).patch(detail(user), {"name": "X"}, format="json").data

    assert (data["total_tasks_assigned"], data["total_tasks_running"]) == (2, 2)


@pytest.fixture
def many_users_with_tasks(db):
    for index in range(25):
        give_tasks(UserFactory(), completed=index % 3, pending=1, failed=index % 2)


@pytest.mark.parametrize("viewer", ["staff", "user"])
def test_list_query_count_does_not_grow_with_page_size(
    client_for, staff, user, many_users_with_tasks, django_assert_num_queries, viewer
):
    client = client_for(staff if viewer == "staff" else user)
    with CaptureQueriesContext(connection) as small_page:
        small = client.get(USERS, {"page_size": 2})
    assert len(small.data["results"]) == 2

    with django_assert_num_queries(len(small_page.captured_queries)):
        large = client.get(USERS, {"page_size": 20})

    assert len(large.data["results"]) == 20
    assert len(small_page.captured_queries) <= 3
    for row in large.data["results"]:
        expected = User.objects.get(pk=row["id"]).assigned_tasks
        assert row["total_tasks_assigned"] == expected.count()
        assert row["total_tasks_completed"] == expected.filter(status="completed").count()


def test_staff_cannot_lock_themselves_out(client_for, staff):
    client = client_for(staff)
    response = client.delete(f"/api/users/{staff.pk}/")
    assert response.status_code == 409 and response.json()["code"] == "cannot_deactivate_self"
    for body in ({"is_active": False}, {"is_staff": False}):
        response = client.patch(f"/api/users/{staff.pk}/", body, format="json")
        assert response.status_code == 400
        assert response.json()["code"] == "cannot_change_own_access"
        response = client.patch("/api/users/me/", body, format="json")
        assert response.status_code == 400
    staff.refresh_from_db()
    assert staff.is_active and staff.is_staff


@pytest.mark.parametrize("url", ["https://xn--zz.com/", "http://exa mple.com/", "http://h:99999/"])
def test_a_webhook_url_that_cannot_be_called_is_400(client_for, user, url):
    response = client_for(user).patch(ME, {"webhook_url": url}, format="json")
    assert response.status_code == 400
    assert "webhook_url" in response.json()


@pytest.mark.parametrize(
    ("patched_email", "registered_email", "message"),
    [
        # Mail to ann@[127.0.0.1] goes where the brackets say: an internal address.
        ("ann@[127.0.0.1]", "lit@[10.1.2.3]", "not an address in brackets"),
        # Django takes control characters in a quoted local part; the account's mail (its
        # reminders, its notifications) then failed in the worker, or went out with its
        # To: header split in two.
        ('"a\x0cb"@example.com', '"a\x0bX-Injected:1"@example.com', "control characters"),
    ],
)
def test_an_account_email_the_service_cannot_mail_is_400(
    client_for, user, api_client, patched_email, registered_email, message
):
    patched = client_for(user).patch(ME, {"email": patched_email}, format="json")
    registered = api_client.post(
        "/api/register/",
        {"username": "refused", "password": PASSWORD, "email": registered_email},
        format="json",
    )
    assert (patched.status_code, registered.status_code) == (400, 400)
    assert message in patched.json()["email"][0]
    assert "email" in registered.json()
    assert not User.objects.filter(username="refused").exists()


def test_the_staff_create_form_shows_is_active_ticked(client, staff):
    client.force_login(staff)
    page = client.get(USERS, HTTP_ACCEPT="text/html").content.decode()
    box = page[page.index('name="is_active"') - 200 : page.index('name="is_active"') + 200]
    assert "checked" in box


@pytest.mark.parametrize(("method", "status"), [("get", 200), ("put", 405)])
def test_a_body_no_parser_takes_leaves_a_get_or_a_put_its_own_answer(
    client_for, user, method, status
):
    """The email-change throttle read the body for every method: '{' made a GET of one's
    own profile a 400 and a PUT (not offered) a 400 instead of its 405."""
    response = client_for(user).generic(method.upper(), ME, "{", content_type="application/json")
    assert response.status_code == status, response.content


@pytest.mark.django_db(transaction=True)
def test_a_password_is_hashed_outside_any_transaction(api_client, monkeypatch, client_for):
    """A hash takes a good part of a second; on SQLite a transaction holds the write lock
    of the whole database, and concurrent sign-ups queued behind each other's hashes (40 at
    once: 20 s, then 503s), every other write with them. Sign-up, a new password and a
    staff member's create each hash before their transaction."""
    from django.db import connection

    staff = UserFactory(is_staff=True, is_superuser=True)
    hashed_in_a_transaction = []
    set_password = User.set_password

    def recording(user, raw):
        hashed_in_a_transaction.append(connection.in_atomic_block)
        return set_password(user, raw)

    monkeypatch.setattr(User, "set_password", recording)
    response = api_client.post(
        "/api/register/", {"username": "newcomer", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 201, response.json()
    newcomer = User.objects.get(username="newcomer")
    response = client_for(newcomer).patch(ME, {"password": "Another-long-secret-9"}, format="json")
    assert response.status_code == 200, response.json()
    body = {"username": "made", "password": PASSWORD, "is_active": False}
    response = client_for(staff).post(USERS, body, format="json")
    assert response.status_code == 201, response.json()
    assert User.objects.get(username="made").is_active is False
    assert hashed_in_a_transaction == [False, False, False]


@pytest.mark.parametrize("name", ["a\u202eb", "Eve\u2066", "bell\x07", "two\nlines", "zw\u200fj"])
def test_a_name_shown_to_others_holds_no_control_character_nor_direction_mark(
    api_client, client_for, user, name
):
    """A name is shown in every user's list: one that turns the text's direction (U+202E)
    reads as another, and control characters were taken too."""
    response = client_for(user).patch(ME, {"name": name}, format="json")
    assert response.status_code == 400 and "name" in response.json(), response.json()
    body = {"username": "shown", "password": PASSWORD, "name": name}
    response = api_client.post("/api/register/", body, format="json")
    assert response.status_code == 400 and "name" in response.json(), response.json()


@pytest.mark.parametrize("name", ["Zoë Ångström", "محمد علي", "李小龍", "O'Brien-Smith"])
def test_names_in_any_script_are_taken(client_for, user, name):
    response = client_for(user).patch(ME, {"name": name}, format="json")
    assert response.status_code == 200 and response.json()["name"] == name

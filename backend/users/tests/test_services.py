"""Rules for creating, changing and deactivating users (``backend.users.services``)."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from backend.tasks.tests.factories import TaskFactory
from backend.users import selectors, services
from backend.users.models import User
from backend.users.tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def test_user_create_hashes_the_password():
    user = services.user_create(username="alice", password=PASSWORD, name="Alice")

    stored = User.objects.get(pk=user.pk)
    assert stored.password != PASSWORD
    assert stored.check_password(PASSWORD)
    assert (stored.name, stored.is_staff, stored.is_active) == ("Alice", False, True)


@pytest.mark.parametrize("email", [None, ""])
def test_user_create_stores_no_email_as_null(email):
    first = services.user_create(username="a1", password=PASSWORD, email=email)
    second = services.user_create(username="a2", password=PASSWORD, email=email)

    assert User.objects.filter(pk__in=[first.pk, second.pk], email=None).count() == 2


def test_user_create_normalizes_the_email_domain():
    user = services.user_create(username="ann", password=PASSWORD, email="Ann@EXAMPLE.com")

    assert User.objects.get(pk=user.pk).email == "Ann@example.com"


@pytest.mark.parametrize("password", ["short", "password", "73029184756", "alice-wonder1"])
def test_user_create_validates_the_password(password):
    with pytest.raises(ValidationError):
        services.user_create(username="alice-wonder", password=password)

    assert not User.objects.filter(username="alice-wonder").exists()


def test_user_create_refuses_an_email_taken_in_another_case():
    UserFactory(email="Ann@Example.com")

    with pytest.raises(ValidationError) as excinfo:
        services.user_create(username="ann2", password=PASSWORD, email="ann@example.COM")

    assert "email" in str(excinfo.value).lower()
    assert not User.objects.filter(username="ann2").exists()


def test_user_create_refuses_a_taken_username():
    UserFactory(username="alice")

    with pytest.raises(ValidationError) as excinfo:
        services.user_create(username="alice", password=PASSWORD)

    assert "username" in excinfo.value.message_dict


def test_database_enforces_case_insensitive_email_uniqueness():
    UserFactory(email="bob@example.com")

    with pytest.raises(IntegrityError):
        User.objects.create(username="bob2", email="BOB@example.com")


def test_user_update_changes_fields_and_hashes_a_new_password():
    user = UserFactory()

    services.user_update(user=user, data={"name": "New", "password": "Fresh-Pass-2024"})

    stored = User.objects.get(pk=user.pk)
    assert stored.name == "New"
    assert stored.check_password("Fresh-Pass-2024")


def test_user_update_refuses_a_weak_password():
    user = UserFactory()

    with pytest.raises(ValidationError):
        services.user_update(user=user, data={"password": "123"})

    assert User.objects.get(pk=user.pk).check_password(PASSWORD)


def test_user_update_refuses_a_taken_email():
    UserFactory(email="taken@example.com")
    user = UserFactory()

    with pytest.raises(ValidationError):
        services.user_update(user=user, data={"email": "TAKEN@example.com"})

    assert User.objects.get(pk=user.pk).email != "TAKEN@example.com"


def test_user_deactivate_keeps_the_user_and_their_tasks():
    user = UserFactory()
    TaskFactory(owner=user)

    returned = services.user_deactivate(user=user)

    assert returned.is_active is False
    stored = User.objects.get(pk=user.pk)
    assert stored.is_active is False
    assert stored.owned_tasks.count() == 1


def test_user_list_hides_inactive_users_from_non_staff():
    viewer = UserFactory()
    inactive = UserFactory(is_active=False)

    assert inactive not in selectors.user_list(viewer=viewer)
    assert inactive in selectors.user_list(viewer=UserFactory(is_staff=True))


def test_full_name_falls_back_to_username():
    assert UserFactory(username="anon", name="").get_full_name() == "anon"
    assert UserFactory(name="Named Person").get_short_name() == "Named Person"


@pytest.mark.parametrize(
    ("field", "taken"),
    [
        ("email", {"email": "SAME@example.com"}),
        ("username", {"username": "SAME"}),
        # PostgreSQL's detail quotes the value: a name holding "email" is still a username.
        ("username", {"username": "EMAILBOB"}),
    ],
)
def test_a_name_taken_between_the_check_and_the_save_is_a_validation_error(
    monkeypatch, field, taken
):
    """Two requests taking one email (in another case) at once both pass ``full_clean``;
    the constraint refused the second with an IntegrityError, a 500. Here the check is
    skipped, as for the request that lost the race."""
    UserFactory(username="same", email="same@example.com")
    UserFactory(username="emailbob", email="bob@example.com")
    monkeypatch.setattr(User, "full_clean", lambda self, **kwargs: None)
    data = {"username": "other", "email": "other@example.com", **taken}
    with pytest.raises(ValidationError) as refused:
        services.user_create(password=PASSWORD, **data)
    assert list(refused.value.message_dict) == [field]
    user = UserFactory(username="third", email="third@example.com")
    with pytest.raises(ValidationError) as refused:
        services.user_update(user=user, data=dict(taken))
    assert list(refused.value.message_dict) == [field]
    assert User.objects.filter(username__iexact=taken.get("username", "same")).count() == 1


@pytest.mark.parametrize(
    ("field", "taken"),
    [("email", {"email": "SAME@example.com"}), ("username", {"username": "SAME"})],
)
def test_a_name_taken_after_the_apis_check_is_refused_naming_the_field(field, taken):
    """A registration that lost the race after the serializer's check, but before the
    model's own, was refused under ``__all__``."""
    UserFactory(username="same", email="same@example.com")
    data = {"username": "other", "email": "other@example.com", **taken}
    with pytest.raises(ValidationError) as refused:
        services.user_create(password=PASSWORD, **data)
    assert refused.value.message_dict == {
        field: [
            f"A user with {'this email' if field == 'email' else 'that username'} already exists."
        ]
    }
    with pytest.raises(ValidationError) as refused:
        services.user_update(user=UserFactory(), data=dict(taken))
    assert list(refused.value.message_dict) == [field]


def test_an_update_writes_only_what_it_changes():
    """A profile PATCH saved the whole row as it loaded it: a webhook secret rotated, or a
    webhook_url cleared by a 410, while the PATCH ran (its password hashing takes a while)
    was undone."""
    user = UserFactory(webhook_url="https://hooks.example.com/x")
    loaded = User.objects.get(pk=user.pk)  # what the PATCH works on
    secret = services.user_webhook_secret_rotate(user=User.objects.get(pk=user.pk))
    services.user_webhook_disable(user_id=user.pk, url="https://hooks.example.com/x")

    services.user_update(user=loaded, data={"name": "Racer", "password": "a-new-Secret-4242"})

    stored = User.objects.get(pk=user.pk)
    assert stored.name == "Racer" and stored.check_password("a-new-Secret-4242")
    assert stored.webhook_secret == secret and stored.webhook_url == ""


def test_only_the_save_that_deactivates_reads_the_sessions(monkeypatch):
    """Each read decodes every unexpired session: every save of an inactive account (an
    edit of its name) paid it, about 0.15 s at 5,000 sessions."""
    from backend.users import tokens

    ended = []
    monkeypatch.setattr(tokens, "browser_sessions_end", lambda ids: ended.append(list(ids)))
    user = UserFactory()
    loaded = User.objects.get(pk=user.pk)
    loaded.is_active = False
    loaded.save()
    assert ended == [[user.pk]]
    again = User.objects.get(pk=user.pk)
    again.name = "renamed while inactive"
    again.save()
    loaded.name = "and once more"
    loaded.save()
    assert ended == [[user.pk]]


def test_a_username_that_is_another_users_email_is_refused_as_the_row_is_written():
    """Two registrations at once (one taking ann@example.com as a username, the other as an
    email) each passed the check made before saving: the save checks again, in turn with
    every other save of a username or email."""
    UserFactory(username="ann", email="ann@example.com")
    late = User(username="ANN@example.com")  # checked before ann was saved, say
    with pytest.raises(ValidationError) as refused:
        services._save(late)
    assert refused.value.message_dict == {
        "username": ["This username is another user's email address."]
    }
    other = User(username="bob", email="Ann")  # an email that is another user's username
    with pytest.raises(ValidationError, match=r"This email is another user's username\."):
        services._save(other)
    assert not User.objects.filter(username__in=["ANN@example.com", "bob"]).exists()


@pytest.mark.django_db(transaction=True)
def test_two_registrations_at_once_cannot_share_a_login_name():
    """One registering x@example.com as a username and one as an email, at the same moment:
    both were created (10 of 10 tries), one login name opening two accounts."""
    import threading

    from django.db import connections

    outcomes = []
    for i in range(5):
        barrier = threading.Barrier(2)

        def register(fields, barrier=barrier):
            barrier.wait()
            try:
                services.user_create(password=PASSWORD, **fields)
                outcomes.append("created")
            except ValidationError as exc:
                outcomes.append(sorted(exc.message_dict))
            finally:
                connections.close_all()

        both = [
            threading.Thread(target=register, args=({"username": f"x{i}@example.com"},)),
            threading.Thread(
                target=register, args=({"username": f"u{i}", "email": f"x{i}@example.com"},)
            ),
        ]
        for thread in both:
            thread.start()
        for thread in both:
            thread.join()
    assert outcomes.count("created") == 5, outcomes
    assert all(o in ("created", ["username"], ["email"]) for o in outcomes), outcomes


def test_an_account_already_in_conflict_can_still_be_changed(client_for, staff):
    """Accounts made before the rule held everywhere (by createsuperuser, the admin or a
    race) could no longer change their name or password, nor be deactivated: every save
    checked the rule, for a field the request never sent."""
    ann = UserFactory(username="ann@example.com", email=None)
    bob = UserFactory(username="bob", email="bob@example.com")
    User.objects.filter(pk=bob.pk).update(email="ann@example.com")  # the old conflict

    response = client_for(User.objects.get(pk=bob.pk)).patch(
        "/api/users/me/", {"name": "Bob", "password": "Another-g00d-pass!"}, format="json"
    )
    assert response.status_code == 200, response.content
    response = client_for(staff).patch(f"/api/users/{ann.pk}/", {"is_active": False}, format="json")
    assert response.status_code == 200, response.content
    # A change of the field itself is still checked.
    UserFactory(username="erin@example.com", email=None)
    carl = UserFactory(username="carl", email="carl@example.com")
    response = client_for(carl).patch(
        "/api/users/me/", {"email": "ERIN@example.com"}, format="json"
    )
    assert response.status_code == 400
    assert "another user's username" in response.json()["email"][0]

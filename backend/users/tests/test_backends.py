"""Logging in with the username or the email address (``UsernameOrEmailBackend``)."""

import pytest
from django.contrib.auth import authenticate

from backend.users.tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return UserFactory(username="alice", email="Alice@Example.com")


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "alice"},
        {"username": "alice@example.com"},
        {"username": "ALICE@EXAMPLE.COM"},
        {"email": "Alice@Example.com"},
    ],
)
def test_authenticates_by_username_or_email(alice, credentials):
    assert authenticate(None, password=PASSWORD, **credentials) == alice


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "alice", "password": "wrong"},
        {"username": "Alice", "password": PASSWORD},
        {"username": "nobody", "password": PASSWORD},
        {"username": "", "password": PASSWORD},
        {"username": "alice", "password": None},
        {"password": PASSWORD},
    ],
)
def test_refuses_bad_credentials(alice, credentials):
    assert authenticate(None, **credentials) is None


def test_refuses_an_inactive_user():
    UserFactory(username="gone", email="gone@example.com", is_active=False)

    assert authenticate(None, username="gone", password=PASSWORD) is None
    assert authenticate(None, username="gone@example.com", password=PASSWORD) is None


def test_exact_username_wins_over_another_users_email():
    by_email = UserFactory(username="carol", email="shared@example.com")
    by_username = UserFactory(username="shared@example.com", email=None)

    assert authenticate(None, username="shared@example.com", password=PASSWORD) == by_username
    assert authenticate(None, username="SHARED@example.com", password=PASSWORD) == by_email

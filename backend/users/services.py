"""Every change to a user goes through here."""

from django.contrib.auth.password_validation import validate_password
from django.db import transaction

from .models import User


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str,
    email: str | None = None,
    name: str = "",
    is_staff: bool = False,
) -> User:
    user = User(username=username, email=email, name=name, is_staff=is_staff)
    validate_password(password, user=user)
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    return user


@transaction.atomic
def user_update(*, user: User, data: dict) -> User:
    """Apply validated profile changes; ``password`` is hashed, never stored as given."""
    password = data.pop("password", None)
    for field, value in data.items():
        setattr(user, field, value)
    if password:
        validate_password(password, user=user)
        user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    return user


def user_deactivate(*, user: User) -> User:
    """Deactivate instead of delete: the user's tasks and history stay."""
    User.objects.filter(pk=user.pk).update(is_active=False)
    user.is_active = False
    return user

"""Every change to a user goes through here."""

import re

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from backend.common.errors import Conflict, DomainError, PermissionDenied

from .models import User
from .tokens import browser_sessions_end, refresh_tokens_revoke_all

# The password is checked and hashed before any transaction: a hash takes a good part of a
# second, and on SQLite a transaction holds the write lock of the whole database (every
# other write waited, and concurrent sign-ups ran out of its busy timeout, 503s).


def user_create(
    *,
    username: str,
    password: str,
    email: str | None = None,
    name: str = "",
    is_staff: bool = False,
    is_active: bool = True,
    notify_email: list[str] | None = None,
    webhook_url: str = "",
    actor: User | None = None,
    username_derived: bool = False,
) -> User:
    """``username_derived``: the username was made from the email (``username_from_email``);
    it is made again as the row is written, so two made from one local part at once differ."""
    if is_staff:
        _require_staff_granter(actor)
    user = User(
        username=username,
        email=email,
        name=name,
        is_staff=is_staff,
        is_active=is_active,
        webhook_url=webhook_url,
    )
    if notify_email is not None:
        user.notify_email = notify_email
    validate_password(password, user=user)
    user.set_password(password)  # outside a transaction (above)
    # A username made from the email is made again, free, as the row is written (see _save).
    unchecked = ["password", "username"] if username_derived else ["password"]
    user.full_clean(exclude=unchecked, validate_constraints=False)
    _save(user, username_derived=username_derived)
    return user


def username_from_email(email: str) -> str:
    """The email's local part, kept to the characters a username allows, made unique with a
    number when taken (ann@x.io → ann, then ann2, ann3, …)."""
    base = re.sub(r"[^\w.@+-]", "", email.split("@", 1)[0])[:140] or "user"
    candidate, n = base, 1
    while User.objects.filter(username__iexact=candidate).exists():
        n += 1
        candidate = f"{base}{n}"
    return candidate


def _save(
    user: User, update_fields: list[str] | None = None, *, username_derived: bool = False
) -> None:
    """Save what ``full_clean`` passed. Whether a username or email is taken in any case
    is left to the database's constraints, which name no field in ``full_clean``
    (``__all__``): a taken one, also by a request that won a race a moment ago, is refused
    here with the field named (400, not a 500)."""
    try:
        with transaction.atomic():
            if update_fields is None or {"username", "email"} & set(update_fields):
                _identity_checked(user, username_derived=username_derived)
            if update_fields is None:
                user.save()
            elif update_fields:
                user.save(update_fields=update_fields)
    except IntegrityError as exc:
        # By the constraint the database names (its first line), not the whole message,
        # whose detail quotes the value: a username holding "email" would mislead.
        field = "email" if "email" in str(exc).splitlines()[0].lower() else "username"
        constraint = next(
            c for c in User._meta.constraints if c.name == f"users_user_{field}_ci_unique"
        )
        raise ValidationError({field: [constraint.violation_error_message]}) from None


# Held by every save of a username or email on PostgreSQL, until its transaction ends.
_IDENTITY_LOCK = 0x5573657249644C6B  # "UserIdLk"


def _identity_checked(user: User, *, username_derived: bool = False) -> None:
    """``User.identity_conflicts``, checked again as the row is written: two requests at
    once (one registering ``ann@example.com`` as a username, the other as an email) each
    passed the serializer's check, before either was saved. Saves of a username or email
    take turns (on SQLite, an IMMEDIATE transaction already holds the write lock), so a
    username made from the email is made here again: the one made before may have been
    taken meanwhile by another made from the same local part."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_IDENTITY_LOCK])
    if username_derived and user.email:
        user.username = username_from_email(user.email)
    if conflicts := user.identity_conflicts():
        raise ValidationError({field: [message] for field, message in conflicts.items()})


ONLY_A_SUPERUSER = "Only a superuser can change or deactivate a superuser's account."
ONLY_USER_ADMINS = (
    "Only a superuser, or staff allowed to change users in the admin, can change or "
    "deactivate another staff member's account, or one holding admin permissions."
)
ONLY_USER_ADMINS_MAKE_STAFF = (
    "Only a superuser, or staff allowed to change users in the admin, can make an account staff."
)
CHANGE_USERS = "users.change_user"


def account_rule_refuses(user: User, actor: User | None) -> str | None:
    """Why ``actor`` may not change or deactivate ``user``'s account (API, admin, actions),
    or None. A superuser's account is changed by a superuser (or themselves); another staff
    member's, or one holding admin permissions, by a superuser or staff holding the admin's
    permission to change users. Staff without the admin's permissions must not take over an
    account that has them (set its password through the API, then sign in to the admin as
    it)."""
    if actor is None or actor.pk == user.pk or actor.is_superuser:
        return None
    if user.is_superuser:
        return ONLY_A_SUPERUSER
    if not actor.has_perm(CHANGE_USERS) and _privileged(user):  # the actor's is cached
        return ONLY_USER_ADMINS
    return None


def _privileged(user: User) -> bool:
    """Staff, or holding admin permissions (its own or a group's), which staff status
    would turn on: such an account, its password set and made staff, was taken over."""
    return user.is_staff or _holding_permissions().filter(pk=user.pk).exists()


def _holding_permissions() -> QuerySet[User]:
    """The accounts holding a permission of their own or of a group (a group without any
    gives none)."""
    return User.objects.filter(
        Q(user_permissions__isnull=False) | Q(groups__permissions__isnull=False)
    ).distinct()


def _require_account_rule(user: User, actor: User | None) -> None:
    if refused := account_rule_refuses(user, actor):
        raise PermissionDenied(refused)


def _require_staff_granter(actor: User | None) -> None:
    """Staff status is given (to a new account or to another's) as the admin gives it: by
    a superuser or by staff holding the permission to change users. Staff without it made
    accounts staff, their passwords set, that they could then neither change back nor
    deactivate (``account_rule_refuses``)."""
    if actor is not None and not actor.is_superuser and not actor.has_perm(CHANGE_USERS):
        raise PermissionDenied(ONLY_USER_ADMINS_MAKE_STAFF)


def user_update(*, user: User, data: dict, actor: User | None = None) -> User:
    """Apply validated profile changes; ``password`` is hashed, never stored as given.

    Staff cannot take their own staff status or activity away (no self lock-out)."""
    _require_account_rule(user, actor)
    if data.get("is_staff") and not user.is_staff:
        _require_staff_granter(actor)
    if actor is not None and actor.pk == user.pk:
        for field in ("is_staff", "is_active"):
            if field in data and not data[field] and getattr(user, field):
                raise DomainError(
                    f"You cannot remove your own {field}; ask another staff member.",
                    code="cannot_change_own_access",
                )
    password = data.pop("password", None)
    for field, value in data.items():
        setattr(user, field, value)
    changed = list(data)
    if password:
        validate_password(password, user=user)
        user.set_password(password)  # outside a transaction (see user_create)
        changed.append("password")
    user.full_clean(exclude=["password"], validate_constraints=False)  # see _save
    # Only what changed: the row as loaded at the start of the request would undo what
    # happened meanwhile (a webhook secret rotated, a webhook_url cleared by a 410).
    _save(user, update_fields=changed)
    return user


CANNOT_DEACTIVATE_SELF = "You cannot deactivate your own account; ask another staff member."


def users_deactivate(*, queryset: QuerySet[User], actor: User | None = None) -> int:
    """Deactivate instead of delete: the users' tasks and history stay. The ``actor``'s own
    account is left out: nobody locks themselves out (nor the last administrator); so are
    those ``account_rule_refuses`` keeps from the actor."""
    if actor is not None:
        queryset = queryset.exclude(pk=actor.pk)
        if not actor.is_superuser:
            queryset = queryset.exclude(is_superuser=True)
            if not actor.has_perm(CHANGE_USERS):
                queryset = queryset.exclude(
                    Q(is_staff=True) | Q(pk__in=_holding_permissions().values("pk"))
                )
    with transaction.atomic():
        users = User.objects.filter(pk__in=list(queryset.values_list("pk", flat=True)))
        count = users.filter(is_active=True).update(  # not those already
            is_active=False, deactivations=F("deactivations") + 1
        )
        # A refresh token issued before must not work again once the account is reactivated,
        # nor a browser session (the admin's, the browsable API's).
        refresh_tokens_revoke_all(users)
        browser_sessions_end(users.values_list("pk", flat=True))
    return count


def user_deactivate(*, user: User, actor: User | None = None) -> User:
    if actor is not None and actor.pk == user.pk:
        raise Conflict(CANNOT_DEACTIVATE_SELF, code="cannot_deactivate_self")
    _require_account_rule(user, actor)
    users_deactivate(queryset=User.objects.filter(pk=user.pk))
    user.is_active = False
    return user


def user_webhook_secret_rotate(*, user: User) -> str:
    """A new secret for signing the user's webhooks; the one it replaces still signs them
    beside it for WEBHOOK_SECRET_OVERLAP seconds. Returned once, to be shown once."""
    from backend.notifications.signing import new_secret

    secret = new_secret()
    now = timezone.now()
    # The replaced secret as the row holds it (a rotation at the same time is not lost).
    User.objects.filter(pk=user.pk).update(
        webhook_secret=secret,
        webhook_secret_previous=F("webhook_secret"),
        webhook_secret_rotated_at=now,
    )
    user.refresh_from_db(fields=["webhook_secret_previous"])
    user.webhook_secret, user.webhook_secret_rotated_at = secret, now
    return secret


def user_webhook_disable(*, user_id, url: str) -> bool:
    """The receiver said 410 Gone: stop sending there (only if the URL is still that one)."""
    return bool(User.objects.filter(pk=user_id, webhook_url=url).update(webhook_url=""))

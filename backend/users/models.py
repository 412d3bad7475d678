import uuid

from django.contrib.auth.models import AbstractUser
from django.contrib.auth.models import UserManager as DjangoUserManager
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models.functions import Lower


class UserManager(DjangoUserManager):
    def get_by_natural_key(self, username):
        # Unique in any case (the constraint below): createsuperuser then says the name is
        # taken instead of failing on the constraint.
        return self.get(username__iexact=username)

    @classmethod
    def normalize_email(cls, email):
        # No address is stored as NULL, so the case-insensitive unique index ignores it.
        return super().normalize_email(email) or None


NOTIFY_EVENTS = ("task.created", "task.completed", "task.failed", "task.cancelled")


def default_notify_email() -> list[str]:
    return ["task.failed"]


class User(AbstractUser):
    """A person using the service. ``username`` is unique regardless of case (and logs in
    as written); ``email`` is optional and unique regardless of case."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # NULL, not "", when absent: the case-insensitive unique index then ignores it.
    email = models.EmailField("email address", blank=True, null=True)  # noqa: DJ001
    name = models.CharField(max_length=150, blank=True)
    # Notification preferences (SPEC §7): the events mailed to ``email``, a URL receiving
    # every event as a signed webhook, and the secret those webhooks are signed with.
    notify_email = models.JSONField(default=default_notify_email, blank=True)
    webhook_url = models.CharField(max_length=2048, blank=True, default="")
    webhook_secret = models.CharField(max_length=64, blank=True, default="", editable=False)
    # The secret a rotation replaced, and when: webhooks are signed with both for
    # WEBHOOK_SECRET_OVERLAP seconds, so a receiver moves to the new one without a gap.
    webhook_secret_previous = models.CharField(
        max_length=64, blank=True, default="", editable=False
    )
    webhook_secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    # How many times the account was deactivated. A token carries the count it was issued
    # at (backend/users/tokens.py): one from before a deactivation stays refused once the
    # account is active again, as its refresh tokens and browser sessions do.
    deactivations = models.PositiveIntegerField(default=0, editable=False)
    first_name = None
    last_name = None

    objects = UserManager()

    class Meta:
        ordering = ["username"]
        constraints = [
            models.UniqueConstraint(
                Lower("username"),
                name="users_user_username_ci_unique",
                violation_error_message="A user with that username already exists.",
            ),
            models.UniqueConstraint(
                Lower("email"),
                name="users_user_email_ci_unique",
                violation_error_message="A user with this email already exists.",
            ),
        ]

    def identity_conflicts(self) -> dict[str, str]:
        """The rule beside the two unique constraints, which no constraint can hold: a
        username may not be another user's email, nor an email another user's username
        (either one logs in, so one login name would open two accounts). Checked for a new
        user, and for a username or email that changes: an account already in conflict
        (made before the rule held everywhere) can still change its name or password, or be
        deactivated."""
        others = type(self).objects.exclude(pk=self.pk)
        loaded = getattr(self, "_loaded_identity", None) if not self._state.adding else None
        found = {}
        if (
            self.username
            and (loaded is None or self.username.lower() != (loaded[0] or "").lower())
            and others.filter(email__iexact=self.username).exists()
        ):
            found["username"] = "This username is another user's email address."
        if (
            self.email
            and (loaded is None or self.email.lower() != (loaded[1] or "").lower())
            and others.filter(username__iexact=self.email).exists()
        ):
            found["email"] = "This email is another user's username."
        return found

    def clean(self):
        super().clean()
        if conflicts := self.identity_conflicts():
            raise ValidationError(conflicts)

    def save(self, *args, **kwargs):
        self.email = type(self).objects.normalize_email(self.email)
        # A new password (set_password, from the API, the admin or changepassword), or none
        # (set_unusable_password), ends the account's sessions: its open refresh tokens are
        # blacklisted. So does saving it inactive: they must not work again once it is
        # reactivated, nor its browser sessions, which are deleted.
        end_sessions = not self._state.adding and (
            self._password is not None
            or getattr(self, "_password_unset", False)
            or not self.is_active
        )
        turns_inactive = (
            not self._state.adding and not self.is_active and getattr(self, "_was_active", True)
        )
        if turns_inactive:
            self.deactivations += 1
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "deactivations"}
        if end_sessions:
            from .tokens import browser_sessions_end, refresh_tokens_revoke

            # One transaction: the row written (and locked) first, so a token refresh under
            # way, which locks the row too, ends before the revocation reads the tokens, or
            # starts after it and finds its token revoked (backend.users.tokens).
            with transaction.atomic():
                super().save(*args, **kwargs)
                refresh_tokens_revoke(self)
                if turns_inactive:
                    browser_sessions_end([self.pk])  # read all sessions: only when it turns off
        else:
            super().save(*args, **kwargs)
        self._password_unset = False
        self._was_active = self.is_active
        self._loaded_identity = (self.username, self.email)

    @classmethod
    def from_db(cls, db, field_names, values):
        user = super().from_db(db, field_names, values)
        user._was_active = user.__dict__.get("is_active", True)  # as loaded (deferred: True)
        if "username" in user.__dict__ and "email" in user.__dict__:
            user._loaded_identity = (user.username, user.email)
        return user

    def set_unusable_password(self):
        # No password any more (the admin's "usable password: no"): the sessions end too.
        super().set_unusable_password()
        self._password_unset = True

    def get_full_name(self) -> str:
        return self.name or self.username

    def get_short_name(self) -> str:
        return self.name or self.username

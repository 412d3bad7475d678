"""Django's ``createsuperuser``, with what this service's users add: the password from
``DJANGO_SUPERUSER_PASSWORD`` (``--noinput``, ``make superuser``) is checked by the password
validators as the prompt checks it, and an email address already in use (in any case) is a
one-line error, as a taken username is, instead of the constraint's traceback; at the prompt,
it is refused there and asked again (it was refused after both password prompts). A username
that is another user's email, or an email that is another user's username, is refused too. On a
database that is not migrated it says so in one line, as the service's commands do. An email
at an address in brackets (``ops@[127.0.0.1]``) is refused, as the API and the admin refuse it
(the admin then refused every later save of the account)."""

import os
from contextlib import nullcontext

from django.contrib.auth.management.commands import createsuperuser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction

from backend.common.commands import ServiceCommand
from backend.common.email import address_refusal


class Command(ServiceCommand, createsuperuser.Command):
    def handle(self, *args, **options):
        interactive = options["interactive"]
        email = options.get("email") or (
            None if interactive else os.environ.get("DJANGO_SUPERUSER_EMAIL")
        )
        if email and (refusal := address_refusal(email)):
            raise CommandError(f"Error: {refusal}")
        if not interactive:
            self._validate_password_from_environment(options)
            self._refuse_identity_conflicts(options)
        # Without prompts, in a transaction, so a refused save leaves the caller's (a test's)
        # usable. Never around the prompts: on SQLite a transaction holds the write lock,
        # and every other process would wait on it while a person types.
        atomic = nullcontext() if interactive else transaction.atomic(using=options["database"])
        try:
            with atomic:
                return super().handle(*args, **options)
        except IntegrityError as exc:
            if "email" in str(exc).lower():
                raise CommandError("Error: That email address is already in use.") from None
            raise CommandError("Error: That username is already taken.") from None

    def get_input_data(self, field, message, default=None):
        value = super().get_input_data(field, message, default)
        if field.name == "email" and value and (refusal := address_refusal(value)):
            self.stderr.write(f"Error: {refusal}")
            return None
        if (
            field.name == "email"
            and value
            and self.UserModel._default_manager.filter(email__iexact=value).exists()
        ):
            self.stderr.write("Error: That email address is already in use.")
            return None  # asked again, as for a taken username
        if value and field.name in ("username", "email"):
            conflict = self.UserModel(**{field.name: value}).identity_conflicts()
            if field.name in conflict:
                self.stderr.write(f"Error: {conflict[field.name]}")
                return None
        return value

    def _refuse_identity_conflicts(self, options) -> None:
        """A username that is another user's email (or the reverse) would make one login name
        open two accounts: refused as the API refuses it."""
        fields = {}
        for name in ("username", "email"):
            value = options.get(name) or os.environ.get(f"DJANGO_SUPERUSER_{name.upper()}")
            if value:
                fields[name] = value
        conflicts = self.UserModel(**fields).identity_conflicts() if fields else {}
        if conflicts:
            raise CommandError("Error: " + " ".join(conflicts.values()))

    def _validate_password_from_environment(self, options) -> None:
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        if not password:
            return
        fields = {}
        for name in (self.UserModel.USERNAME_FIELD, *self.UserModel.REQUIRED_FIELDS):
            value = options.get(name) or os.environ.get(f"DJANGO_SUPERUSER_{name.upper()}")
            if value:
                fields[name] = value
        try:
            validate_password(password, self.UserModel(**fields))
        except ValidationError as exc:
            raise CommandError(
                "Error: DJANGO_SUPERUSER_PASSWORD: " + " ".join(exc.messages)
            ) from None

"""The base of this service's ``manage.py`` commands."""

import argparse

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.db.migrations.executor import MigrationExecutor

from backend.common.errors import DomainError


def whole_number(value: str) -> int:
    """A command's integer argument, or an argument error naming it (exit code 2, with the
    usage); each command checks its own range."""
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def database_unavailable(exc: Exception, alias: str = DEFAULT_DB_ALIAS) -> str:
    """One line for a command that met a database error (down, or gone meanwhile)."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"The database ({connections[alias].settings_dict['NAME']}) is unavailable: {reason}"


def unapplied_migrations(connection) -> int:
    """How many of this code's migrations the database lacks."""
    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))


class ServiceCommand(BaseCommand):
    """A command that reads or writes the service's tables: on a database that was never
    migrated (or not fully) it stops with one line saying what to do, instead of a
    traceback ending in "no such table". (On SQLite, opening the database still leaves an
    empty file where it looked.)"""

    def execute(self, *args, **options):
        connection = connections[DEFAULT_DB_ALIAS]
        try:
            if unapplied_migrations(connection):
                raise CommandError(
                    f"The database ({connection.settings_dict['NAME']}) is not migrated: run "
                    "`make migrate` (or `manage.py migrate`). If `make run` uses another one, "
                    "give this command the same VAR_DIR or DATABASE_URL (or put it in .env)."
                )
            return super().execute(*args, **options)
        except (OperationalError, InterfaceError) as exc:
            # The database is down or went away meanwhile: one line, not a traceback.
            raise CommandError(database_unavailable(exc)) from exc
        except DomainError as exc:
            # A rule of the service refused what the command asked: its message, one line.
            raise CommandError(exc.detail) from exc

#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db import InterfaceError, OperationalError

    try:
        execute_from_command_line(sys.argv)
    except (OperationalError, InterfaceError) as exc:
        # Django's own commands (migrate, showmigrations, changepassword…) on a database
        # that is down: one line, as the service's commands say it.
        from backend.common.commands import database_unavailable

        sys.exit(f"CommandError: {database_unavailable(exc)}")
    except ImproperlyConfigured as exc:
        if settings.configured:
            raise  # raised by a command or an app, not while reading the environment
        # The settings could not be read (a missing or bad environment variable): its
        # message says which and how to fix it, a traceback would only bury it.
        sys.exit(f"Configuration error: {exc}")


if __name__ == "__main__":
    main()

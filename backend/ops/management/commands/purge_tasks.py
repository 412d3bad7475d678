from datetime import timedelta

from django.core.management.base import CommandError

from backend.common.commands import ServiceCommand, whole_number
from backend.ops import services

# An age beyond this (a century) would put the cutoff before the first dates Python holds.
MAX_DAYS = 36_500
# A batch is one transaction holding its rows' locks: beyond this it is no longer short
# (each row also updates its owner's kept count), and its ids, one parameter each, would
# pass the 65,535 PostgreSQL takes in one statement.
MAX_BATCH = 10_000


def _positive(value: str) -> int:
    import argparse

    number = whole_number(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _days(value: str) -> int:
    import argparse

    number = _positive(value)
    if number > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DAYS} (a century), got {number}")
    return number


def _batch(value: str) -> int:
    import argparse

    number = _positive(value)
    if number > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BATCH}, got {number}")
    return number


def _describe(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    detail = ", ".join(f"{status}: {n}" for status, n in counts.items())
    return f"{total} task(s)" + (f" ({detail})" if detail else "")


class Command(ServiceCommand):
    help = (
        "Delete finished tasks (completed, failed, cancelled) that finished more than DAYS "
        "days ago, in batches, each batch its own short transaction. Active tasks are never "
        "removed. --dry-run only says what would be removed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=_days,
            required=True,
            metavar="DAYS",
            help="remove tasks finished more than DAYS days ago (at least 1)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="change nothing; print what would be removed"
        )
        parser.add_argument(
            "--batch-size",
            type=_batch,
            default=1000,
            metavar="N",
            help=f"tasks deleted per transaction (default 1000, at most {MAX_BATCH})",
        )

    def handle(self, *args, older_than, dry_run, batch_size, **options):
        age = timedelta(days=older_than)
        if dry_run:
            counts = services.purge_counts(services.purgeable_tasks(older_than=age))
            self.stdout.write(
                f"Dry run: would remove {_describe(counts)} finished over {older_than} day(s) "
                "ago. Nothing was changed."
            )
            return
        try:
            removed = services.tasks_purge(older_than=age, batch_size=batch_size)
        except Exception as exc:  # a database error half-way: earlier batches stay removed
            raise CommandError(f"The purge stopped: {exc}") from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Removed {_describe(removed)} finished over {older_than} day(s) ago."
            )
        )

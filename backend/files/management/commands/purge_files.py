import argparse
from datetime import timedelta

from django.conf import settings
from django.template.defaultfilters import filesizeformat

from backend.common.commands import ServiceCommand, whole_number
from backend.files import services
from backend.ops.management.commands.purge_tasks import MAX_DAYS


def _age(value: str) -> int:
    """Days, 0 (every file no active task uses) to MAX_DAYS: an argument error otherwise,
    as purge_tasks gives (exit code 2, with the usage)."""
    days = whole_number(value)
    if not 0 <= days <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_DAYS} days (a century), got {days}")
    return days


class Command(ServiceCommand):
    help = (
        "Delete files (rows and bytes) older than FILE_RETENTION_DAYS that no active task "
        "uses, and bytes in the storage that no file names, as old (an hour at least); what "
        "Beat runs every FILE_CLEANUP_INTERVAL seconds."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=_age,
            metavar="DAYS",
            default=None,
            help=f"age in days (default FILE_RETENTION_DAYS, now {settings.FILE_RETENTION_DAYS})",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="only count what would be deleted"
        )

    def handle(self, *args, older_than=None, dry_run=False, **options):
        age = timedelta(days=older_than) if older_than is not None else None
        outcome = services.files_purge(older_than=age, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(
            f"{verb} {outcome['files']} file(s), {filesizeformat(outcome['bytes'])}; "
            f"{outcome['kept_in_use']} kept (used by active tasks); "
            f"{verb} {outcome['leftovers']} leftover(s) no file names, "
            f"{filesizeformat(outcome['leftover_bytes'])}"
        )

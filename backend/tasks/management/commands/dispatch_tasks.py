import argparse

from django.conf import settings
from django.core.management import CommandError

from backend.common.commands import ServiceCommand, whole_number
from backend.tasks import services

MAX_SECONDS = 7 * 24 * 3600


def _seconds(value: str) -> int:
    """Seconds, 0 to a week: an argument error otherwise (exit code 2, with the usage)."""
    seconds = whole_number(value)
    if not 0 <= seconds <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_SECONDS} seconds, got {seconds}")
    return seconds


class Command(ServiceCommand):
    help = "Release due scheduled tasks and send unsent pending tasks to the broker."

    def add_arguments(self, parser):
        parser.add_argument(
            "--resend-after",
            type=_seconds,
            metavar="SECONDS",
            default=None,
            help="send again the pending tasks sent this long ago and not started (default "
            f"TASK_REDISPATCH_AFTER, now {settings.TASK_REDISPATCH_AFTER}; 0: every one, e.g. "
            "after a worker was killed outright with messages it had taken; a task sent twice "
            "still runs once)",
        )

    def handle(self, *args, resend_after=None, **options):
        outcome = services.tasks_dispatch_all(resend_after=resend_after)
        self.stdout.write(
            f"released {outcome['released']} scheduled task(s); "
            f"sent {outcome['sent']} of {outcome['due']} pending task(s)"
        )
        refuse_unsent(outcome)


def refuse_unsent(outcome: dict) -> None:
    """Exit 1 when the broker took not all of the due tasks: a script (or an operator after
    a broker restart) is not told it worked."""
    if unsent := outcome["due"] - outcome["sent"]:
        raise CommandError(
            f"{unsent} pending task(s) could not be sent: the broker is unavailable (see "
            "the warning above). They stay pending; the dispatcher sends them once it is "
            "back, or run this again then."
        )

from django.core.management import CommandError

from backend.common.commands import ServiceCommand
from backend.tasks import services


class Command(ServiceCommand):
    help = (
        "Return running worker tasks with a stale heartbeat to pending (or fail them when "
        "out of attempts), then dispatch."
    )

    def handle(self, *args, **options):
        outcome = services.tasks_rescue()
        dispatched = services.tasks_dispatch()
        self.stdout.write(
            f"requeued {outcome['requeued']} and failed {outcome['failed']} stale task(s); "
            f"sent {dispatched['sent']} of {dispatched['due']} pending task(s)"
        )
        if unsent := dispatched["due"] - dispatched["sent"]:
            # Exit 1, as dispatch_tasks: a script is not told that the rescue went out.
            raise CommandError(
                f"{unsent} pending task(s) could not be sent: the broker is unavailable (see "
                "the warning above). They stay pending; the dispatcher sends them once it is "
                "back, or run this again then."
            )

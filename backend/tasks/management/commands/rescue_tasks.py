from backend.common.commands import ServiceCommand
from backend.tasks import services

from .dispatch_tasks import refuse_unsent


class Command(ServiceCommand):
    help = (
        "Return running worker tasks with a stale heartbeat to pending (or fail them when "
        "out of attempts), then dispatch."
    )

    def handle(self, *args, **options):
        outcome = services.tasks_rescue()
        dispatched = services.tasks_dispatch_all()
        self.stdout.write(
            f"requeued {outcome['requeued']} and failed {outcome['failed']} stale task(s); "
            f"sent {dispatched['sent']} of {dispatched['due']} pending task(s)"
        )
        refuse_unsent(dispatched)  # exit 1, as dispatch_tasks

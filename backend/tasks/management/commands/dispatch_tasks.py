from backend.common.commands import ServiceCommand
from backend.tasks import services


class Command(ServiceCommand):
    help = "Release due scheduled tasks and send unsent pending tasks to the broker."

    def handle(self, *args, **options):
        outcome = services.tasks_dispatch()
        self.stdout.write(
            f"released {outcome['released']} scheduled task(s); "
            f"sent {outcome['sent']} of {outcome['due']} pending task(s)"
        )

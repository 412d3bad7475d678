import time

from backend.common.commands import ServiceCommand
from backend.tasks import services


class Command(ServiceCommand):
    help = "Fail every active task past its deadline (what Beat runs every TASK_EXPIRY_INTERVAL)."

    def handle(self, *args, **options):
        began = time.perf_counter()
        count = services.tasks_expire()
        self.stdout.write(f"expired {count} task(s) in {time.perf_counter() - began:.2f} s")

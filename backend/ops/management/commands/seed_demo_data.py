import argparse

from backend.common.commands import ServiceCommand, whole_number
from backend.ops import demo


def _users(value: str) -> int:
    number = whole_number(value)
    if not 1 <= number <= 100:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100, got {number}")
    return number


class Command(ServiceCommand):
    help = (
        "Create demo data: demo users (demo1, demo2, ... with known passwords, printed when "
        "created), tasks of every registered type in every status, a schedule and a CSV file. "
        "Idempotent: running it again creates only what is missing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--users",
            type=_users,
            default=3,
            metavar="N",
            help="demo users to create, at least (default 3; more when the active tasks "
            "need them to stay within MAX_ACTIVE_TASKS)",
        )

    def handle(self, *args, users, **options):
        seeded = demo.demo_data_seed(users=users)
        if seeded.users_created:
            self.stdout.write("Demo users created (the passwords are shown only now):")
            for name, password in seeded.users_created:
                self.stdout.write(f"  {name:<10} {password}")
        self.stdout.write(
            f"{seeded.users} demo user(s), {len(seeded.users_created)} new; "
            f"{seeded.tasks} demo task(s), {seeded.tasks_created} new; "
            f"schedule {_schedule(seeded)}; "
            f"file {'created' if seeded.file_created else 'already there'}."
        )


def _schedule(seeded: demo.Seeded) -> str:
    if seeded.schedule_refused:
        return f"not created ({seeded.schedule_refused})"
    return "created" if seeded.schedule_created else "already there"

import json

from django.db import connection
from rest_framework.utils.encoders import JSONEncoder

from backend.common.commands import ServiceCommand
from backend.ops import selectors, services


def _table(rows: list[tuple], headers: tuple[str, ...]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return [line.format(*headers), line.format(*("-" * w for w in widths))] + [
        line.format(*(str(cell) for cell in row)) for row in rows
    ]


class Command(ServiceCommand):
    help = (
        "Print the operational figures of GET /api/admin/stats/: tasks by status and by "
        "type, completed/failed in the last hour, run-time p50/p95 per type (24 h), the oldest "
        "pending task's age, queue depth per queue and the workers online."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the figures as JSON")
        parser.add_argument(
            "--recount",
            action="store_true",
            help="first count the tasks afresh into the counts PostgreSQL keeps (by status "
            "and type, and each user's list count), after a bulk load or a restore that went "
            "around its triggers",
        )

    def handle(self, *args, **options):
        if options["recount"] and connection.vendor != "postgresql":
            # services.task_counts_rebuild() has nothing to do: no counts are kept.
            self.stderr.write("SQLite counts the tasks at every read: nothing to recount.")
        elif options["recount"]:
            services.task_counts_rebuild()
            self.stderr.write(
                "Counts by status and type, and each user's list count, recounted from the tasks."
            )
        stats = selectors.stats()
        if options["json"]:
            self.stdout.write(json.dumps(stats, cls=JSONEncoder, indent=2))
            return
        out = []
        out += ["Tasks by status", *_table(sorted(stats["by_status"].items()), ("status", "tasks"))]
        used = sorted((t, n) for t, n in stats["by_type"].items() if n)
        out += ["", "Tasks by type", *_table(used or [("-", 0)], ("type", "tasks"))]
        done = sum(slot["completed"] for slot in stats["throughput"])
        failed = sum(slot["failed"] for slot in stats["throughput"])
        out += ["", f"Last 60 minutes: {done} completed, {failed} failed"]
        runs = [
            (t, f["count"], f"{f['p50']:.3f}", f"{f['p95']:.3f}")
            for t, f in stats["run_times"].items()
        ]
        out += [
            "",
            "Run time over the last 24 h (seconds)",
            *_table(runs or [("-", 0, "-", "-")], ("type", "runs", "p50", "p95")),
        ]
        age = stats["oldest_pending_age"]
        out += ["", f"Oldest pending task: {'none' if age is None else f'{age:.1f} s old'}"]
        depth = stats["queue_depth"]
        if depth is None:
            out += ["", "Queue depth: unknown (the broker did not answer)"]
        else:
            out += ["", "Queue depth", *_table(list(depth.items()), ("queue", "waiting"))]
        workers = stats["workers"]
        if workers is None:
            out += ["", "Workers online: unknown (the broker did not answer)"]
        else:
            rows = [(w["name"], ",".join(w["queues"]), w["active"]) for w in workers]
            out += ["", f"Workers online: {len(workers)}"]
            if rows:
                out += _table(rows, ("worker", "queues", "active"))
        self.stdout.write("\n".join(out))

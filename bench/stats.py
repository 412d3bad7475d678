"""``GET /api/admin/stats/`` latency on the production stack (bench/stack.py: PostgreSQL,
Redis, gunicorn, the workers) with 100,000 and then 1,000,000 tasks in the table, where its
time goes, and what the kept counts cost a worker.

The tasks are written straight into PostgreSQL with ``generate_series`` in one statement per
size (the per-user list count trigger off for the load; the triggers that keep the counts by
status and type on, as in production), then ``VACUUM ANALYZE``: 93 % completed over the
last 30 days, the rest pending, running, scheduled, failed and cancelled, over every task
type. Beat is paused while the requests run, so no sweep touches the rows; the workers stay
up, so ``workers_online`` is read from them as in production.

Each size: a few warm-up requests, then sequential requests from one client (p50, p95, max,
and how many of the requests read the broker afresh: its figures are kept a few seconds per
web process, so most requests do not); the counts the API reports are checked against a
``GROUP BY`` of the table; then each figure's query is timed on its own inside a Django
process (median of 20), beside the count the API made before the counts were kept (a scan
of every task, which SQLite still does).

Last, the write path: pending tasks claimed and finished through the service functions the
worker calls (``task_claim``, ``task_finish``: one transaction each, as in the worker),
progress reports, single-row inserts and expiry sweeps, in blocks taken in turn with the
count trigger on and off (``ALTER TABLE ... DISABLE TRIGGER``); wall time and the CPU time
of the Python process and of its PostgreSQL backend per write. The count rows are folded before
each block, as the periodic job would (Beat is paused), and the fold's time is reported
apart. The counts are then rebuilt
(``task_counts_rebuild``: the changes made with the trigger off were not counted) and
checked again.

    .venv/bin/python bench/stats.py [--sizes 100000,1000000] [--requests 60]
                                    [--write-tasks 10000] [--sweep-tasks 20000]

Writes ``bench/RESULTS-stats.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import BenchError, api, cpu_model, expect, register, running_stack

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS-stats.md"
TARGET_MS = 100  # p50 at 1,000,000 tasks

# i % 100 picks the status; completed_at spread over 30 days by a multiplicative hash of i.
LOAD = """
INSERT INTO tasks_task (
    id, owner_id, assignee_id, name, description, task_type, input_data, priority,
    priority_rank, status, progress, attempts, max_attempts, created_at, updated_at,
    started_at, completed_at, heartbeat_at, enqueued_at, run_at
)
SELECT gen_random_uuid(), %(owner)s::uuid, %(owner)s::uuid, 'bench ' || i, '', (%(types)s::text[])[1 + i %% %(ntypes)s],
       '{}'::jsonb, 'normal', 1, s.status, CASE WHEN s.status = 'completed' THEN 100 ELSE 0 END,
       1, 3, t.done - interval '5 seconds', t.done,
       CASE WHEN s.status IN ('completed', 'failed', 'running') THEN t.done - t.took END,
       CASE WHEN s.status IN ('completed', 'failed', 'cancelled') THEN t.done END,
       CASE WHEN s.status = 'running' THEN now() END,
       CASE WHEN s.status = 'pending' THEN now() END,
       CASE WHEN s.status = 'scheduled' THEN now() + interval '1 day' END
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
CROSS JOIN LATERAL (SELECT CASE
    WHEN i %% 100 < 2 THEN 'pending' WHEN i %% 100 = 2 THEN 'running'
    WHEN i %% 100 = 3 THEN 'scheduled' WHEN i %% 100 < 6 THEN 'failed'
    WHEN i %% 100 = 6 THEN 'cancelled' ELSE 'completed' END AS status) AS s
CROSS JOIN LATERAL (SELECT
    now() - ((i * 7919) %% 43200) * interval '1 minute' AS done,
    (1 + i %% 50) * interval '100 milliseconds' AS took) AS t
"""

# The per-user list count (tasks app) is one row per user, updated by a row trigger: a
# million inserts for one user would queue a million updates of that row. Off for the load
# (the bench never reads that count); the counts by status and type stay on.
VISIBLE_COUNT_TRIGGER = "tasks_visible_count_insert_delete"

# Each figure's query on its own, in a process already connected: median ms of 20 runs.
FIGURES = r"""
import json, statistics, sys, time
from django.db.models import Count
from django.utils import timezone
from backend.ops import selectors
from backend.tasks.models import Task

now = timezone.now()
figures = {
    "counts (kept, PostgreSQL)": selectors.counts,
    "counts by scanning the tasks (before; SQLite)": lambda: list(
        Task.objects.order_by().values_list("status", "task_type").annotate(n=Count("*"))
    ),
    "throughput per minute, 60 min": lambda: selectors.throughput(now),
    "run-time p50/p95 per type, 24 h": lambda: selectors.run_times(now),
    "oldest pending age": lambda: selectors.oldest_pending_age(now),
    "all database figures": lambda: selectors.database_figures(now),
}
out = {}
for name, figure in figures.items():
    figure()
    times = []
    for _ in range(20):
        began = time.perf_counter()
        figure()
        times.append((time.perf_counter() - began) * 1000)
    out[name] = statistics.median(times)
print(json.dumps(out))
"""

# The worker's two status changes per task, through its service functions, in blocks taken
# in turn with the count trigger on and off; then single-row inserts likewise.
WRITE_PATH = r"""
import json, os, statistics, sys, time
from datetime import timedelta
from django.db import connection
from django.utils import timezone
from backend.ops import services as ops_services
from backend.tasks import services
from backend.tasks.models import Task

owner, tasks, block, sweep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
TICK = os.sysconf("SC_CLK_TCK")
with connection.cursor() as cursor:
    cursor.execute("SELECT pg_backend_pid()")
    backend = cursor.fetchone()[0]


def backend_cpu():
    fields = open(f"/proc/{backend}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def trigger(name, on):
    with connection.cursor() as cursor:
        state = "ENABLE" if on else "DISABLE"
        cursor.execute(f"ALTER TABLE tasks_task {state} TRIGGER {name}")


def make(count, **fields):
    return Task.objects.bulk_create(
        Task(owner_id=owner, assignee_id=owner, task_type="sum",
             input_data={"numbers": [1, 2, 3]}, **fields)
        for _ in range(count)
    )


# Each part: (set-up, not timed; the timed run over what the set-up returned; changes).
def status_changes():
    def run(ids):
        for task_id in ids:
            task = services.task_claim(task_id=task_id)
            assert task is not None and services.task_finish(task=task, result={"sum": 6})
    return lambda: [task.pk for task in make(block)], run, 2 * block


def progress_reports():
    def setup():
        now = timezone.now()
        return make(block, status="running", attempts=1, started_at=now, heartbeat_at=now)

    def run(running):
        for task in running:
            assert services.task_report_progress(task=task, progress=50)
    return setup, run, block


def inserts():
    def run(_):
        for _ in range(block):
            Task.objects.create(owner_id=owner, assignee_id=owner, task_type="sum",
                                input_data={"numbers": [1, 2, 3]})
    return lambda: None, run, block


def sweeps():
    def setup():
        now = timezone.now()
        make(sweep, enqueued_at=now, deadline=now - timedelta(minutes=1))

    def run(_):
        assert services.tasks_expire() == sweep
    return setup, run, sweep


folds = {"rows": 0, "seconds": 0.0}


# What the periodic job does (Beat is paused here): before each block, not timed with it;
# its own time is added up apart.
def fold():
    began = time.perf_counter()
    folds["rows"] += ops_services.task_counts_fold()
    folds["seconds"] += time.perf_counter() - began


def compare(trigger_name, part, rounds):
    result = {"on": [], "off": []}
    for i in range(rounds):
        for on in ((True, False) if i % 2 == 0 else (False, True)):
            setup, run, changes = part()
            trigger(trigger_name, on)
            prepared = setup()
            fold()
            wall, cpu, db = time.perf_counter(), time.process_time(), backend_cpu()
            run(prepared)
            result["on" if on else "off"].append(
                (time.perf_counter() - wall, time.process_time() - cpu, backend_cpu() - db)
            )
    trigger(trigger_name, True)
    summary = {}
    for mode, runs in result.items():
        # Wall: the median block (a block slowed by another process on the machine drops
        # out). CPU: all blocks summed (it is counted in clock ticks).
        summary[mode] = {
            "wall_us": statistics.median(r[0] for r in runs) / changes * 1e6,
            "python_cpu_us": sum(r[1] for r in runs) / changes / len(runs) * 1e6,
            "db_cpu_us": sum(r[2] for r in runs) / changes / len(runs) * 1e6,
            "blocks": len(runs),
        }
    summary["changes"] = changes * rounds
    summary["block"] = changes
    return summary


rounds = max(1, tasks // block)
out = {
    "status": compare("ops_task_count_update", status_changes, rounds),
    "progress": compare("ops_task_count_update", progress_reports, rounds),
    "insert": compare("ops_task_count_insert", inserts, rounds),
    "sweep": compare("ops_task_count_update", sweeps, 3),
}
fold()
out["fold"] = folds
ops_services.task_counts_rebuild()
print(json.dumps(out))
"""


def load(stack, owner: str, types: list[str], first: int, last: int) -> float:
    started = time.monotonic()
    with stack.db.transaction():
        # Foreign keys checked at the INSERT's end, not at commit: the trigger is turned back
        # on in the same transaction, which no pending check may follow.
        stack.sql("SET CONSTRAINTS ALL IMMEDIATE")
        stack.sql(f"ALTER TABLE tasks_task DISABLE TRIGGER {VISIBLE_COUNT_TRIGGER}")
        stack.sql(
            LOAD,
            {"owner": owner, "types": types, "ntypes": len(types), "first": first, "last": last},
        )
        stack.sql(f"ALTER TABLE tasks_task ENABLE TRIGGER {VISIBLE_COUNT_TRIGGER}")
    stack.sql("VACUUM ANALYZE tasks_task")
    return time.monotonic() - started


def check_counts(stack, by_status: dict[str, int], by_type: dict[str, int]) -> None:
    """The API's counts are the table's, pair for pair."""
    rows = stack.sql("SELECT status, task_type, count(*) FROM tasks_task GROUP BY 1, 2")
    statuses: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for status, kind, n in rows:
        statuses[status] = statuses.get(status, 0) + n
        kinds[kind] = kinds.get(kind, 0) + n
    got_status = {k: v for k, v in by_status.items() if v}
    got_type = {k: v for k, v in by_type.items() if v}
    if got_status != statuses or got_type != kinds:
        raise BenchError(f"the stats counts {got_status} {got_type}, the table {statuses} {kinds}")


def measure(port: int, token: str, requests: int) -> dict:
    for _ in range(3):
        expect(port, "GET", "/api/admin/stats/", 200, token)
    times, fresh = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        code, body = api(port, "GET", "/api/admin/stats/", token)
        elapsed = (time.perf_counter() - started) * 1000
        if code != 200:
            raise BenchError(f"GET /api/admin/stats/: {code} {str(body)[:200]}")
        times.append(elapsed)
        fresh += elapsed > 500  # a request that waited on the broker's inspect reply
    times.sort()
    return {
        "p50": statistics.median(times),
        "p95": times[max(0, round(0.95 * len(times)) - 1)],
        "max": times[-1],
        "fresh": fresh,
        "requests": requests,
        "body": body,
    }


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def report(args, rows, figures, write, loads) -> list[str]:
    lines = [
        "# Stats endpoint latency (bench/stats.py)",
        "",
        f"`GET /api/admin/stats/` as staff, {args.requests} sequential requests per size after "
        "3 warm-ups, on the production stack of `bench/stack.py` (PostgreSQL and Redis on "
        "loopback, gunicorn, the workers running, beat paused). Machine: "
        f"{len(os.sched_getaffinity(0))} CPUs ({cpu_model()}), {platform.machine()}, "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}. "
        "The machine is shared: load average (1 / 5 / 15 min) before the run "
        f"{loads['start']}, after it {loads['end']}.",
        "",
        "| tasks | p50 ms | p95 ms | max ms | requests that read the broker afresh "
        "| load average at the start of the size |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for size, _, result, load_before in rows:
        lines.append(
            f"| {size:,} | {result['p50']:.1f} | {result['p95']:.1f} | {result['max']:.1f} | "
            f"{result['fresh']} of {result['requests']} | {load_before} |"
        )
    biggest = [r for r in rows if r[0] >= 1_000_000]
    if biggest:
        p50 = biggest[-1][2]["p50"]
        verdict = "met" if p50 <= TARGET_MS else "NOT met"
        lines += ["", f"Target p50 <= {TARGET_MS} ms at 1,000,000 tasks: {verdict} ({p50:.1f} ms)."]
    lines += [
        "",
        "The counts the API reported matched a `GROUP BY status, task_type` of the table at "
        "each size. The broker's figures (queue depth, workers online) are kept a few "
        "seconds per web process; a request that reads them afresh waits up to "
        "`OPS_BROKER_TIMEOUT` for the workers' `inspect` replies, which the max column shows.",
        "",
        "## Where the time goes",
        "",
        "Each figure's query timed on its own in a Django process already connected (median "
        "of 20, ms). The counts by status and type come from the rows PostgreSQL triggers "
        "keep (`backend/ops/models.py`, `TaskCountDelta`); the scan of every task they "
        "replace, which SQLite still does, is shown beside them.",
        "",
        "| figure | " + " | ".join(f"{size:,} tasks" for size in figures) + " |",
        "|---|" + "---:|" * len(figures),
    ]
    names = list(next(iter(figures.values()))) if figures else []
    for name in names:
        cells = " | ".join(f"{figures[size][name]:.1f}" for size in figures)
        lines.append(f"| {name} | {cells} |")
    if write:
        lines += write_section(write, rows[-1][0])
    lines.append("")
    return lines


WRITE_PARTS = (
    ("status", "status change", "status change (`task_claim`, then `task_finish`)"),
    ("progress", "progress report", "progress report (`task_report_progress`)"),
    ("insert", "insert", "insert (`Task.objects.create`)"),
    ("sweep", "task expired by a sweep", "sweep (`tasks_expire()`), per task it expired"),
)


def write_section(write: dict, size: int) -> list[str]:
    status, sweep = write["status"], write["sweep"]
    lines = [
        "",
        "## What the kept counts cost the write path",
        "",
        f"On the {size:,} tasks, through the service functions the worker and Beat call, with "
        "their transactions as in production: status changes (a task claimed, then finished: "
        f"{status['changes']:,} in each state), as many progress reports on running tasks "
        "(an update that changes no count), single-row inserts, and sweeps that expire "
        f"{sweep['block']:,} overdue tasks in one statement ({sweep['on']['blocks']} in each "
        f"state). Blocks of {status['block'] // 2:,} tasks are taken in turn with the count "
        "trigger on and off (`ALTER TABLE tasks_task DISABLE TRIGGER ops_task_count_update`, "
        "or `ops_task_count_insert` for the inserts). Per write: wall time (the median block), "
        "CPU time of the Python process and of its PostgreSQL backend (from `/proc`, summed "
        "over the blocks).",
        "",
        "| write | trigger | wall µs | Python CPU µs | PostgreSQL CPU µs |",
        "|---|---|---:|---:|---:|",
    ]
    for key, name, _ in WRITE_PARTS:
        for mode in ("off", "on"):
            r = write[key][mode]
            lines.append(
                f"| {name} | {mode} | {r['wall_us']:.1f} | {r['python_cpu_us']:.1f} | "
                f"{r['db_cpu_us']:.1f} |"
            )
    lines.append("")
    for key, _, label in WRITE_PARTS:
        on, off = write[key]["on"], write[key]["off"]
        wall = on["wall_us"] - off["wall_us"]
        db = on["db_cpu_us"] - off["db_cpu_us"]
        total_off = off["python_cpu_us"] + off["db_cpu_us"]
        cpu = on["python_cpu_us"] + on["db_cpu_us"] - total_off
        lines.append(
            f"- Per {label}: {wall:+.1f} µs of wall time ({100 * wall / off['wall_us']:+.1f} %); "
            f"PostgreSQL CPU {db:+.1f} µs; Python and PostgreSQL CPU together {cpu:+.1f} µs "
            f"({100 * cpu / total_off:+.1f} %)."
        )
    fold = write["fold"]
    if fold["rows"]:
        lines += [
            "",
            "The fold (the periodic job; run here before each block, not timed with it) "
            f"removed {fold['rows']:,} rows in {fold['seconds'] * 1000:.0f} ms in all, "
            f"{fold['seconds'] / fold['rows'] * 1e6:.1f} µs per row; a status change appends "
            "two rows, a sweep two per (status, type) pair.",
        ]
    lines += [
        "",
        "The Python process does the same work in both states: the difference in its CPU "
        "time shows how much the machine's other load moves these figures. A task costs the "
        "worker two status changes (claim, finish). The counts were rebuilt "
        "afterwards (`task_counts_rebuild`, the changes made with the trigger off were not "
        "counted) and matched the table again.",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="task counts, ascending")
    parser.add_argument("--requests", type=int, default=60, help="timed requests per size")
    parser.add_argument(
        "--write-tasks",
        type=int,
        default=10000,
        help="tasks claimed and finished per trigger state in the write-path part "
        "(two status changes each; 0 skips the part)",
    )
    parser.add_argument(
        "--sweep-tasks",
        type=int,
        default=20000,
        help="overdue tasks each timed sweep (tasks_expire) expires in the write-path part",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    rows, figures, write = [], {}, None
    loads = {"start": load_average()}
    with running_stack(None) as stack:
        staff = register(stack.port, "stats")
        stack.sql("UPDATE users_user SET is_staff = true WHERE id = %s", (staff.id,))
        types = [t["name"] for t in expect(stack.port, "GET", "/api/task-types/", 200, staff.token)]
        loaded = 0
        with stack.paused("beat"):
            for size in sizes:
                load_before = load_average()
                seconds = load(stack, staff.id, types, loaded + 1, size)
                loaded = size
                result = measure(stack.port, staff.token, args.requests)
                count = sum(result["body"]["by_status"].values())
                if count != size:
                    raise BenchError(f"the stats count {count} tasks, {size} were loaded")
                check_counts(stack, result["body"]["by_status"], result["body"]["by_type"])
                figures[size] = json.loads(stack.django(FIGURES))
                rows.append((size, seconds, result, load_before))
                print(
                    f"{size:>9,} tasks (loaded in {seconds:.0f} s): p50 {result['p50']:.1f} ms, "
                    f"p95 {result['p95']:.1f} ms, max {result['max']:.1f} ms "
                    f"({result['fresh']} of {result['requests']} read the broker afresh); "
                    f"load average {load_before}",
                    flush=True,
                )
                for name, ms in figures[size].items():
                    print(f"    {name}: {ms:.1f} ms", flush=True)
            if args.write_tasks:
                block = max(1, min(250, args.write_tasks // 10))
                out = stack.django(
                    WRITE_PATH,
                    staff.id,
                    str(args.write_tasks),
                    str(block),
                    str(args.sweep_tasks),
                )
                write = json.loads(out)
                body = expect(stack.port, "GET", "/api/admin/stats/", 200, staff.token)
                check_counts(stack, body["by_status"], body["by_type"])
                print(f"write path: {json.dumps(write)}", flush=True)
    loads["end"] = load_average()

    RESULTS.write_text("\n".join(report(args, rows, figures, write, loads)))
    print(f"written {RESULTS.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``GET /api/admin/stats/`` latency on the production stack (bench/stack.py: PostgreSQL,
Redis, gunicorn, the workers) with 100,000 and then 1,000,000 tasks in the table.

The tasks are written straight into PostgreSQL with ``generate_series`` (triggers off for
the load, then ``VACUUM ANALYZE``): 93 % completed over the last 30 days, the rest pending,
running, scheduled, failed and cancelled, over every task type. Beat is paused while the
requests run, so no sweep touches the rows; the workers stay up, so ``workers_online`` is
read from them as in production. Each size: a few warm-up requests, then sequential
requests from one client; p50, p95 and max are reported, with how many of the requests read
the broker afresh (its figures are kept ~10 s per web process, so most requests do not).

    .venv/bin/python bench/stats.py [--sizes 100000,1000000] [--requests 60]

Writes ``bench/RESULTS-stats.md``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import BenchError, api, expect, register, running_stack

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


def load(stack, owner: str, types: list[str], first: int, last: int) -> float:
    started = time.monotonic()
    with stack.db.transaction():
        stack.sql("SET LOCAL session_replication_role = replica")  # the count trigger: off
        stack.sql(
            LOAD,
            {"owner": owner, "types": types, "ntypes": len(types), "first": first, "last": last},
        )
    stack.sql("VACUUM ANALYZE tasks_task")
    return time.monotonic() - started


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="task counts, ascending")
    parser.add_argument("--requests", type=int, default=60, help="timed requests per size")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    rows = []
    with running_stack(None) as stack:
        staff = register(stack.port, "stats")
        stack.sql("UPDATE users_user SET is_staff = true WHERE id = %s", (staff.id,))
        types = [t["name"] for t in expect(stack.port, "GET", "/api/task-types/", 200, staff.token)]
        loaded = 0
        with stack.paused("beat"):
            for size in sizes:
                seconds = load(stack, staff.id, types, loaded + 1, size)
                loaded = size
                result = measure(stack.port, staff.token, args.requests)
                count = sum(result["body"]["by_status"].values())
                if count != size:
                    raise BenchError(f"the stats count {count} tasks, {size} were loaded")
                rows.append((size, seconds, result))
                print(
                    f"{size:>9,} tasks (loaded in {seconds:.0f} s): p50 {result['p50']:.1f} ms, "
                    f"p95 {result['p95']:.1f} ms, max {result['max']:.1f} ms "
                    f"({result['fresh']} of {result['requests']} read the broker afresh)"
                )

    lines = [
        "# Stats endpoint latency (bench/stats.py)",
        "",
        f"`GET /api/admin/stats/` as staff, {args.requests} sequential requests per size after "
        "3 warm-ups, on the production stack of `bench/stack.py` (PostgreSQL and Redis on "
        "loopback, gunicorn, the workers running, beat paused). Machine: "
        f"{platform.machine()}, {platform.system()} {platform.release()}.",
        "",
        "| tasks | p50 ms | p95 ms | max ms | requests that read the broker afresh |",
        "|---:|---:|---:|---:|---:|",
    ]
    for size, _, result in rows:
        lines.append(
            f"| {size:,} | {result['p50']:.1f} | {result['p95']:.1f} | {result['max']:.1f} | "
            f"{result['fresh']} of {result['requests']} |"
        )
    biggest = [r for r in rows if r[0] >= 1_000_000]
    if biggest:
        p50 = biggest[-1][2]["p50"]
        verdict = "met" if p50 <= TARGET_MS else "NOT met"
        lines += ["", f"Target p50 <= {TARGET_MS} ms at 1,000,000 tasks: {verdict} ({p50:.1f} ms)."]
    lines += [
        "",
        "The broker's figures (queue depth, workers online) are kept a few seconds per web "
        "process; a request that reads them afresh waits up to `OPS_BROKER_TIMEOUT` for the "
        "workers' `inspect` replies, which the max column shows.",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print(f"written {RESULTS.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

-- The expiry of 100,000 overdue tasks on three table layouts, one statement each on one
-- backend, then 20,000 runs of a task (claim, finish) on two of them: what the product's
-- layout costs, what a redesign would gain on the expiry, and what it would cost a worker
-- (bench/README.md, "The expiry's floor"). Run it against a database the product's
-- migrations have built (the copies take their columns from tasks_task); it writes only to
-- the schema expiry_layouts, and drops it at the end:
--
--     psql "$DATABASE_URL" -f bench/expiry_layouts.sql
--
-- Run it a few times: this machine's pace moves by a quarter from hour to hour.
\set ON_ERROR_STOP on
\set rows 100000
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS expiry_layouts CASCADE;
CREATE SCHEMA expiry_layouts;
SET search_path = expiry_layouts, public;

-- The overdue tasks, as bench/production.py makes them: half pending, half running, one
-- owner who is also the assignee, past their deadline by a minute.
CREATE TABLE overdue AS
SELECT gen_random_uuid() AS id, 'sum'::varchar(200) AS name, ''::text AS description,
       'sum'::varchar(50) AS task_type, jsonb_build_object('numbers', jsonb_build_array(i, i + 1)) AS input_data,
       'normal'::varchar(10) AS priority, 1::smallint AS priority_rank,
       (CASE WHEN i % 2 = 1 THEN 'running' ELSE 'pending' END)::varchar(10) AS status,
       NULL::jsonb AS result, NULL::text AS error, 0::smallint AS progress,
       now() - interval '1 minute' AS deadline, NULL::timestamptz AS run_at,
       (i % 2) AS attempts, 1 AS max_attempts,
       CASE WHEN i % 2 = 1 THEN now() END AS heartbeat_at, now() AS enqueued_at,
       now() - interval '2 hours' + i * interval '1 millisecond' AS created_at,
       now() AS updated_at, CASE WHEN i % 2 = 1 THEN now() END AS started_at,
       NULL::timestamptz AS completed_at,
       '00000000-0000-4000-8000-000000000001'::uuid AS assignee_id,
       '00000000-0000-4000-8000-000000000001'::uuid AS owner_id
FROM generate_series(1, :rows) AS i;

-- 1. The product's layout: every index of tasks_task (no triggers: LIKE copies none).
CREATE TABLE product (LIKE public.tasks_task INCLUDING ALL);
INSERT INTO product SELECT * FROM overdue;

-- 2. The floor: room on every page (fillfactor 45) and no index whose key or condition
-- mentions status or completed_at, so the UPDATE is heap-only (HOT). Not a design by itself:
-- nothing would find the active tasks or the finished ones.
CREATE TABLE hot_only (LIKE public.tasks_task INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    WITH (fillfactor = 45);
INSERT INTO hot_only SELECT * FROM overdue;
ALTER TABLE hot_only ADD PRIMARY KEY (id);
CREATE INDEX ON hot_only (owner_id, created_at DESC, id);
CREATE INDEX ON hot_only (created_at DESC, id);
CREATE INDEX ON hot_only (deadline) WHERE deadline IS NOT NULL;

-- 3. A redesign: the same task table, with the active tasks' sweep keys in a table of their
-- own (a row per active task, deleted when it finishes) and the finished runs' figures in
-- another (a row per run that started).
CREATE TABLE split (LIKE public.tasks_task INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    WITH (fillfactor = 50);
INSERT INTO split SELECT * FROM overdue;
ALTER TABLE split ADD PRIMARY KEY (id);
CREATE INDEX ON split (owner_id, created_at DESC, id);
CREATE INDEX ON split (created_at DESC, id);
CREATE INDEX ON split (assignee_id, created_at DESC, id)
    WHERE assignee_id IS NOT NULL AND assignee_id <> owner_id;
CREATE TABLE split_active (
    task_id uuid PRIMARY KEY, status varchar(10) NOT NULL, assignee_id uuid,
    deadline timestamptz, run_at timestamptz, enqueued_at timestamptz,
    heartbeat_at timestamptz, created_at timestamptz NOT NULL);
INSERT INTO split_active
SELECT id, status, assignee_id, deadline, run_at, enqueued_at, heartbeat_at, created_at FROM overdue;
CREATE INDEX ON split_active (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX ON split_active (assignee_id);
CREATE INDEX ON split_active (run_at) WHERE status = 'scheduled';
CREATE INDEX ON split_active (enqueued_at) WHERE status = 'pending';
CREATE INDEX ON split_active (heartbeat_at) WHERE status = 'running';
CREATE INDEX ON split_active (created_at) WHERE status = 'pending';
CREATE TABLE split_runs (
    id bigserial PRIMARY KEY, completed_at timestamptz NOT NULL, status varchar(10) NOT NULL,
    task_type varchar(50) NOT NULL, started_at timestamptz);
CREATE INDEX ON split_runs (completed_at) INCLUDE (status, task_type, started_at);

VACUUM ANALYZE product, hot_only, split, split_active, split_runs;
CHECKPOINT;

-- The expiry the service runs (tasks_expire), as one statement.
\set expire 'SET status = ''failed'', error = ''deadline exceeded'', completed_at = now(), updated_at = now() WHERE deadline < now() AND status IN (''scheduled'', ''pending'', ''running'')'

\echo
\echo '1. the product''s layout: one UPDATE'
\timing on
UPDATE product :expire;
\timing off
CHECKPOINT;

\echo '2. the floor (HOT, nothing tracks active or finished tasks): one UPDATE'
\timing on
UPDATE hot_only :expire;
\timing off
CHECKPOINT;

\echo '3. the redesign: DELETE the active rows, UPDATE the tasks (HOT), INSERT the runs that started'
\timing on
WITH gone AS (DELETE FROM split_active WHERE deadline < now() RETURNING task_id),
changed AS (
    UPDATE split AS t SET status = 'failed', error = 'deadline exceeded', completed_at = now(),
           updated_at = now()
    FROM gone WHERE t.id = gone.task_id AND t.status IN ('scheduled', 'pending', 'running')
    RETURNING t.task_type, t.started_at)
INSERT INTO split_runs (completed_at, status, task_type, started_at)
SELECT now(), 'failed', task_type, started_at FROM changed WHERE started_at IS NOT NULL;
\timing off

\o /dev/null
SELECT pg_stat_force_next_flush();
\o
\echo 'rows the expiry updated, of them heap-only (HOT):'
SELECT relname AS layout, n_tup_upd AS updated, n_tup_hot_upd AS hot
FROM pg_stat_user_tables
WHERE schemaname = 'expiry_layouts' AND relname IN ('product', 'hot_only', 'split')
ORDER BY relname;

-- What the redesign costs a worker: 20,000 runs of a task, claim then finish, each statement
-- committed as a worker's are (in PL/pgSQL, so without the round trips), on the product's
-- layout and on the redesign's.
CREATE TABLE fresh AS
SELECT gen_random_uuid() AS id, name, description, task_type, input_data, priority,
       priority_rank, 'pending'::varchar(10) AS status, result, error, progress,
       NULL::timestamptz AS deadline, run_at, 0 AS attempts, max_attempts,
       NULL::timestamptz AS heartbeat_at, now() AS enqueued_at, now() AS created_at,
       now() AS updated_at, NULL::timestamptz AS started_at, completed_at, assignee_id, owner_id
FROM overdue LIMIT 20000;
INSERT INTO product SELECT * FROM fresh;
INSERT INTO split SELECT * FROM fresh;
INSERT INTO split_active
SELECT id, status, assignee_id, deadline, run_at, enqueued_at, heartbeat_at, created_at FROM fresh;
VACUUM ANALYZE product, split, split_active, split_runs;
CHECKPOINT;
-- A run's statements commit without waiting for the disk, as the service's do
-- (RUN_SYNCHRONOUS_COMMIT=false, its default).
SET synchronous_commit = off;

\echo '4. 20,000 runs (claim, finish) on the product''s layout'
\timing on
DO $$
DECLARE task uuid;
BEGIN
    FOR task IN SELECT id FROM fresh LOOP
        UPDATE product SET status = 'running', started_at = now(), heartbeat_at = now(),
               attempts = attempts + 1, updated_at = now()
        WHERE id = task AND status = 'pending';
        COMMIT;
        UPDATE product SET status = 'completed', result = '{"result": 3}', progress = 100,
               completed_at = now(), updated_at = now()
        WHERE id = task AND status = 'running';
        COMMIT;
    END LOOP;
END $$;
\timing off
CHECKPOINT;

\echo '5. 20,000 runs (claim, finish) on the redesign'
\timing on
DO $$
DECLARE task uuid;
BEGIN
    FOR task IN SELECT id FROM fresh LOOP
        WITH claimed AS (
            UPDATE split_active SET status = 'running', heartbeat_at = now()
            WHERE task_id = task AND status = 'pending' RETURNING task_id)
        UPDATE split SET status = 'running', started_at = now(), heartbeat_at = now(),
               attempts = attempts + 1, updated_at = now()
        FROM claimed WHERE id = claimed.task_id;
        COMMIT;
        WITH gone AS (
            DELETE FROM split_active WHERE task_id = task AND status = 'running'
            RETURNING task_id),
        finished AS (
            UPDATE split SET status = 'completed', result = '{"result": 3}', progress = 100,
                   completed_at = now(), updated_at = now()
            FROM gone WHERE id = gone.task_id RETURNING task_type, started_at, completed_at)
        INSERT INTO split_runs (completed_at, status, task_type, started_at)
        SELECT completed_at, 'completed', task_type, started_at FROM finished;
        COMMIT;
    END LOOP;
END $$;
\timing off

DROP SCHEMA expiry_layouts CASCADE;

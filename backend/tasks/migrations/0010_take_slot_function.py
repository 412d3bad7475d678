from django.db import migrations

from backend.common.migration_ops import run_sql_on

# The five-task limit in one statement on PostgreSQL (backend/tasks/services/limits.py): lock
# the assignee's row until the transaction ends, then count their active tasks. The count is
# a statement of its own inside a VOLATILE function, so it takes a fresh snapshot after the
# lock is granted and sees every task committed by whoever held the lock before. A create
# calls it in its INSERT's WHERE, in autocommit when the INSERT is all it writes: one round
# trip for the lock, the count and the row, where a transaction of its own took four.
FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION tasks_take_slot(holder uuid, most bigint, skip uuid DEFAULT NULL)
RETURNS boolean VOLATILE AS $$
BEGIN
    PERFORM 1 FROM users_user WHERE id = holder FOR UPDATE;
    RETURN (
        SELECT count(*) FROM tasks_task
        WHERE assignee_id = holder
          AND status IN ('scheduled', 'pending', 'running')
          AND (skip IS NULL OR id <> skip)
    ) < most;
END
$$ LANGUAGE plpgsql;
"""

DROP_SQL = "DROP FUNCTION IF EXISTS tasks_take_slot(uuid, bigint, uuid);"


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0009_visible_count_truncate"),
        ("users", "0001_initial"),
    ]

    operations = [
        run_sql_on("postgresql", FUNCTION_SQL, DROP_SQL),
    ]

from django.db import migrations

from backend.common.migration_ops import run_sql_on

# The limit's lock on the assignee's row becomes FOR NO KEY UPDATE: creates for one user still
# take turns (the lock conflicts with itself), but it no longer conflicts with the KEY SHARE
# lock a foreign-key check takes. A transaction that changed a user's kept task count twice
# (a purge deleting several of their tasks) checks that row's foreign key to the user when it
# commits; with FOR UPDATE held by a create waiting for that same count, the two deadlocked.
FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION tasks_take_slot(holder uuid, most bigint, skip uuid DEFAULT NULL)
RETURNS boolean VOLATILE AS $$
BEGIN
    PERFORM 1 FROM users_user WHERE id = holder FOR NO KEY UPDATE;
    RETURN (
        SELECT count(*) FROM tasks_task
        WHERE assignee_id = holder
          AND status IN ('scheduled', 'pending', 'running')
          AND (skip IS NULL OR id <> skip)
    ) < most;
END
$$ LANGUAGE plpgsql;
"""

PREVIOUS_SQL = FUNCTION_SQL.replace("FOR NO KEY UPDATE", "FOR UPDATE")


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0010_take_slot_function"),
    ]

    operations = [
        run_sql_on("postgresql", FUNCTION_SQL, PREVIOUS_SQL),
    ]

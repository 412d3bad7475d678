from django.db import migrations, models

from backend.common.migration_ops import run_sql_on

# PostgreSQL keeps ops_taskcountdelta in step with tasks_task, in the transaction of each
# change:
# - an INSERT or DELETE statement adds one row per (status, type) pair it touched (statement
#   triggers reading the transition table: a bulk insert of a million tasks adds a few dozen
#   rows, a purge batch a few);
# - an UPDATE that changes a task's status or type adds -1 for the old pair and +1 for the
#   new one (a row trigger, so the worker's progress and heartbeat updates, which change
#   neither, fire nothing at all);
# - a TRUNCATE empties it.
# Rows are only ever appended (never one counter row updated by everyone), so concurrent
# status changes take no lock on a shared row and never wait on each other.
TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION ops_task_count_changed() RETURNS trigger AS $$
BEGIN
    INSERT INTO ops_taskcountdelta (status, task_type, delta)
    VALUES (OLD.status, OLD.task_type, -1), (NEW.status, NEW.task_type, 1);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION ops_task_count_inserted() RETURNS trigger AS $$
BEGIN
    INSERT INTO ops_taskcountdelta (status, task_type, delta)
    SELECT status, task_type, count(*) FROM inserted GROUP BY status, task_type;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION ops_task_count_deleted() RETURNS trigger AS $$
BEGIN
    INSERT INTO ops_taskcountdelta (status, task_type, delta)
    SELECT status, task_type, -count(*) FROM deleted GROUP BY status, task_type;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION ops_task_count_truncated() RETURNS trigger AS $$
BEGIN
    DELETE FROM ops_taskcountdelta;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER ops_task_count_insert AFTER INSERT ON tasks_task
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION ops_task_count_inserted();
CREATE TRIGGER ops_task_count_delete AFTER DELETE ON tasks_task
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION ops_task_count_deleted();
CREATE TRIGGER ops_task_count_update AFTER UPDATE OF status, task_type ON tasks_task
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.task_type IS DISTINCT FROM NEW.task_type)
    EXECUTE FUNCTION ops_task_count_changed();
CREATE TRIGGER ops_task_count_truncate AFTER TRUNCATE ON tasks_task
    FOR EACH STATEMENT EXECUTE FUNCTION ops_task_count_truncated();

-- The tasks already there: no task changes between the count and the triggers taking over.
LOCK TABLE tasks_task IN SHARE MODE;
INSERT INTO ops_taskcountdelta (status, task_type, delta)
SELECT status, task_type, count(*) FROM tasks_task GROUP BY status, task_type;
"""

DROP_SQL = """
DROP TRIGGER IF EXISTS ops_task_count_truncate ON tasks_task;
DROP TRIGGER IF EXISTS ops_task_count_update ON tasks_task;
DROP TRIGGER IF EXISTS ops_task_count_delete ON tasks_task;
DROP TRIGGER IF EXISTS ops_task_count_insert ON tasks_task;
DROP FUNCTION IF EXISTS ops_task_count_truncated();
DROP FUNCTION IF EXISTS ops_task_count_deleted();
DROP FUNCTION IF EXISTS ops_task_count_inserted();
DROP FUNCTION IF EXISTS ops_task_count_changed();
"""


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("tasks", "0006_ops_covering_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="TaskCountDelta",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("status", models.CharField(max_length=10)),
                ("task_type", models.CharField(max_length=50)),
                ("delta", models.BigIntegerField()),
            ],
        ),
        run_sql_on("postgresql", TRIGGER_SQL, DROP_SQL),
    ]

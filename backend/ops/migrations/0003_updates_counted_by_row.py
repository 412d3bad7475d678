from importlib import import_module

from django.db import migrations

from backend.common.migration_ops import run_sql_on

# Updates counted row by row again, except in the statements whose caller counts them.
#
# The statement trigger of 0002 reads transition tables, which PostgreSQL fills with every
# row an UPDATE changes, old and new: an expiry of 100,000 tasks spent about as long filling
# and reading them as on the UPDATE itself. A row trigger does not need them, and costs a
# one-row change (a claim, an outcome) the same. The sweeps that change many tasks at once
# write their count rows themselves, in the same statement, and set ops.counted_by_caller
# for it, which this trigger's WHEN clause skips (backend/ops/counts.py).
ROW_SQL = """
DROP TRIGGER IF EXISTS ops_task_count_update ON tasks_task;
DROP FUNCTION IF EXISTS ops_task_count_updated();

CREATE OR REPLACE FUNCTION ops_task_count_changed() RETURNS trigger AS $$
BEGIN
    INSERT INTO ops_taskcountdelta (status, task_type, delta)
    VALUES (OLD.status, OLD.task_type, -1), (NEW.status, NEW.task_type, 1);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER ops_task_count_update AFTER UPDATE OF status, task_type ON tasks_task
    FOR EACH ROW
    WHEN ((OLD.status IS DISTINCT FROM NEW.status OR OLD.task_type IS DISTINCT FROM NEW.task_type)
          AND current_setting('ops.counted_by_caller', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION ops_task_count_changed();
"""


previous = import_module("backend.ops.migrations.0002_statement_update_trigger")


class Migration(migrations.Migration):
    dependencies = [
        ("ops", "0002_statement_update_trigger"),
    ]

    operations = [
        run_sql_on("postgresql", ROW_SQL, previous.STATEMENT_SQL),
    ]

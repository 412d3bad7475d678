from django.db import migrations

from backend.common.migration_ops import run_sql_on

# A TRUNCATE of tasks_task fires no row trigger, so the users' kept counts (0004) would go on
# counting tasks that are gone: their lists would report them, and link pages that are empty.
# A statement trigger empties the counts with the table, as the ops counts are (ops 0001).
# (After a load that bypasses triggers, ``manage.py task_stats --recount`` counts them afresh.)
TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION tasks_visible_count_truncated() RETURNS trigger AS $$
BEGIN
    DELETE FROM tasks_visibletaskcount;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER tasks_visible_count_truncate AFTER TRUNCATE ON tasks_task
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_visible_count_truncated();
"""

DROP_SQL = """
DROP TRIGGER IF EXISTS tasks_visible_count_truncate ON tasks_task;
DROP FUNCTION IF EXISTS tasks_visible_count_truncated();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0008_assignee_active_index"),
    ]

    operations = [
        run_sql_on("postgresql", TRIGGER_SQL, DROP_SQL),
    ]

"""What the migrations share."""

from __future__ import annotations

from django.db import migrations


def run_sql_on(vendor: str, forward: str, backward: str) -> migrations.RunPython:
    """``RunSQL`` on one database vendor (``connection.vendor``) and a no-op on the others:
    triggers PostgreSQL keeps, an index only SQLite needs."""

    def step(sql: str):
        def run(apps, schema_editor):
            if schema_editor.connection.vendor == vendor:
                schema_editor.execute(sql, params=None)

        return run

    return migrations.RunPython(step(forward), step(backward))

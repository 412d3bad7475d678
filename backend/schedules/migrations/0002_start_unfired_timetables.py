"""A schedule on that has not fired starts its timetable from its last change, as beat
counted it, so that from now on an edit does not postpone its first firing
(``services._sync_periodic_task``)."""

from django.db import migrations
from django.db.models import F

FIRE_TASK = "backend.schedules.jobs.fire_schedule"


def start_timetables(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(task=FIRE_TASK, enabled=True, last_run_at__isnull=True).update(
        last_run_at=F("date_changed")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("schedules", "0001_initial"),
    ]

    operations = [migrations.RunPython(start_timetables, migrations.RunPython.noop)]

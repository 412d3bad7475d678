from django.db import migrations, models
from django.db.models import Count


def keep_one_row_per_attempt(apps, schema_editor):
    """Before the constraint: where an attempt has two rows (a "lost" one written by its
    successor, then its own outcome), keep its own outcome."""
    attempts = apps.get_model("notifications", "DeliveryAttempt").objects
    doubled = (
        attempts.values("notification_id", "number")
        .annotate(rows=Count("id"))
        .filter(rows__gt=1)
    )
    for pair in doubled:
        rows = list(
            attempts.filter(notification_id=pair["notification_id"], number=pair["number"])
            .order_by("-id")
        )
        own = [row for row in rows if not row.error.startswith("no outcome:")] or rows
        attempts.filter(pk__in=[row.pk for row in rows if row.pk != own[0].pk]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0002_notification_payload"),
    ]

    operations = [
        migrations.RunPython(keep_one_row_per_attempt, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="deliveryattempt",
            constraint=models.UniqueConstraint(
                fields=("notification", "number"), name="delivery_attempt_once_per_number"
            ),
        ),
    ]

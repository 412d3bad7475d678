import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def forget_anonymous_keys(apps, schema_editor):
    """Going back: the earlier table has no room for a key without a user (a registration's)."""
    apps.get_model("common", "IdempotencyKey").objects.filter(user__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("common", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="idempotencykey",
            name="user",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.CASCADE, to=settings.AUTH_USER_MODEL
            ),
        ),
        migrations.RunPython(migrations.RunPython.noop, forget_anonymous_keys),
        migrations.AddConstraint(
            model_name="idempotencykey",
            constraint=models.UniqueConstraint(
                condition=models.Q(("user__isnull", True)),
                fields=("key",),
                name="idempotency_key_anonymous",
            ),
        ),
    ]

import django.db.models.functions.text
from django.db import migrations, models
from django.db.models import Count
from django.db.models.functions import Lower


def refuse_usernames_differing_only_in_case(apps, schema_editor):
    """Name the accounts to rename first, rather than fail on the constraint's error."""
    User = apps.get_model("users", "User")
    clashes = (
        User.objects.annotate(folded=Lower("username"))
        .values("folded")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .values_list("folded", flat=True)
    )
    if clashes:
        names = sorted(
            User.objects.annotate(folded=Lower("username"))
            .filter(folded__in=list(clashes))
            .values_list("username", flat=True)
        )
        raise RuntimeError(
            "Usernames must now be unique regardless of case; rename all but one of each of "
            f"these, then migrate again: {', '.join(names)}"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("users", "0002_notification_preferences"),
    ]

    operations = [
        migrations.RunPython(refuse_usernames_differing_only_in_case, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="user",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower("username"),
                name="users_user_username_ci_unique",
                violation_error_message="A user with that username already exists.",
            ),
        ),
    ]

from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: the figures behind the stats API, /metrics, the admin dashboard and the
    operator's manage.py commands."""

    name = "backend.ops"
    label = "ops"

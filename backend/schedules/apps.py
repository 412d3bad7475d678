from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "backend.schedules"
    label = "schedules"

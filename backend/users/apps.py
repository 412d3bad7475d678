from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "backend.users"
    label = "users"

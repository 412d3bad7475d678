"""Reads of notifications."""

from django.db.models import QuerySet

from backend.users.models import User

from .models import Notification


def notifications_visible_to(user: User) -> QuerySet[Notification]:
    """Staff see every notification; others those made for them (their mails, their
    webhooks, their tasks' callbacks), newest first."""
    queryset = Notification.objects.all()
    if not user.is_staff:
        queryset = queryset.filter(user=user)
    return queryset.order_by("-created_at", "-id")

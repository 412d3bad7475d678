"""Celery entry points: thin wrappers around the services."""

from celery import shared_task

from . import services


@shared_task(name="backend.notifications.jobs.deliver_notifications", ignore_result=True)
def deliver_notifications(notification_ids: list[str]) -> dict:
    return services.notifications_deliver(notification_ids=notification_ids)


@shared_task(name="backend.notifications.jobs.deliver_notification", ignore_result=True)
def deliver_notification(notification_id: str) -> str:
    """One notification: the messages of earlier versions, which sent one per message."""
    return services.notification_deliver(notification_id=notification_id)


@shared_task(name="backend.notifications.jobs.dispatch_notifications", ignore_result=True)
def dispatch_notifications() -> dict:
    return services.notifications_dispatch()

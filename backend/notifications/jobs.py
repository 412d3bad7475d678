"""Celery entry points: thin wrappers around the services."""

from celery import shared_task

from . import services


@shared_task(name="backend.notifications.jobs.deliver_notification", ignore_result=True)
def deliver_notification(notification_id: str) -> str:
    return services.notification_deliver(notification_id=notification_id)


@shared_task(name="backend.notifications.jobs.dispatch_notifications", ignore_result=True)
def dispatch_notifications() -> dict:
    return services.notifications_dispatch()

"""The outbox: one row per (event, channel, recipient), written in the transaction of the
task's state change; delivered after commit, re-sent by the dispatcher until delivered or
out of attempts. Every attempt is kept."""

import uuid

from django.conf import settings
from django.db import models


class Event(models.TextChoices):
    CREATED = "task.created"
    COMPLETED = "task.completed"
    FAILED = "task.failed"
    CANCELLED = "task.cancelled"


class Channel(models.TextChoices):
    EMAIL = "email"  # to the owner's address, for the events in their notify_email
    WEBHOOK = "webhook"  # to the owner's webhook_url, every event
    CALLBACK = "callback"  # to the task's callback_url, every event of that task


class NotificationStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Notification(models.Model):
    # Also the webhook-id: stable across retries, so receivers can drop duplicates.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event = models.CharField(max_length=20, choices=Event.choices)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    target = models.CharField(max_length=2048, help_text="Email address or URL.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    # Not a foreign key: a task deleted after its event still has its notification sent
    # (with what is left of it), and deleting tasks never touches this table.
    task_id = models.UUIDField(db_index=True)
    status = models.CharField(
        max_length=10, choices=NotificationStatus.choices, default=NotificationStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    # When a delivery message was last handed to the broker (NULL: not yet, or to send again).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # A worker delivering it holds it until then; after that (a crash) it may be taken again.
    locked_until = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # Its last attempt got no answer from the receiver (timed out, refused, unreachable):
    # until its retry is due, the other webhooks to that receiver wait too.
    unreachable = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # The task as the first attempt sent it, as JSON text (jsonb would reorder its keys);
    # every later attempt sends the same, since the webhook-id (this row's id) names one
    # message. NULL until then.
    payload = models.TextField(null=True, blank=True, editable=False)  # noqa: DJ001

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="notification_due",
                condition=models.Q(status="pending"),
            ),
            models.Index(fields=["user", "-created_at"], name="notification_user_created"),
            models.Index(
                fields=["user"],
                name="notification_unreachable",
                condition=models.Q(status="pending", unreachable=True),
            ),
            # A user's deliveries under way (NOTIFY_USER_CONCURRENCY): few at any time.
            models.Index(
                fields=["user"],
                name="notification_held",
                condition=models.Q(status="pending", locked_until__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} by {self.channel} to {self.target}"


class DeliveryAttempt(models.Model):
    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="delivery_attempts"
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    delivered = models.BooleanField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["notification", "number"]
        constraints = [
            # One outcome per attempt: a late worker's own outcome replaces the "lost" row
            # its successor wrote for it.
            models.UniqueConstraint(
                fields=["notification", "number"], name="delivery_attempt_once_per_number"
            )
        ]

    def __str__(self) -> str:
        return f"attempt {self.number}: {'delivered' if self.delivered else self.error}"


class TaskCallback(models.Model):
    """A task's ``callback_url``, kept beside the task (only tasks that have one)."""

    task = models.OneToOneField(
        "tasks.Task", on_delete=models.CASCADE, primary_key=True, related_name="callback"
    )
    url = models.CharField(max_length=2048)

    def __str__(self) -> str:
        return self.url

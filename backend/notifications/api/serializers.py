from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from backend.notifications.models import Notification, NotificationStatus

_DATETIME = serializers.DateTimeField()


class NotificationSerializer(serializers.ModelSerializer):
    task = serializers.UUIDField(
        source="task_id", read_only=True, help_text="the task whose event this is"
    )
    next_attempt_at = serializers.SerializerMethodField(
        help_text="when a pending one is tried next; null once delivered or failed"
    )

    class Meta:
        model = Notification
        fields = (
            "id",
            "event",
            "channel",
            "target",
            "task",
            "status",
            "attempts",
            "last_error",
            "created_at",
            "delivered_at",
            "next_attempt_at",
        )
        read_only_fields = fields
        extra_kwargs = {
            "target": {"help_text": "the address mailed, or the URL posted to"},
            "last_error": {"help_text": "why the last attempt failed; empty once delivered"},
        }

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_attempt_at(self, notification: Notification):
        if notification.status != NotificationStatus.PENDING:
            return None
        return _DATETIME.to_representation(notification.next_attempt_at)

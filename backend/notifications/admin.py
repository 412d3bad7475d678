from django.contrib import admin, messages

from backend.common.admin import BoundedSearchMixin

from . import services
from .models import DeliveryAttempt, Notification


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "duration_ms", "delivered", "status_code", "error")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Notification)
class NotificationAdmin(BoundedSearchMixin, admin.ModelAdmin):
    list_display = (
        "event",
        "channel",
        "target",
        "user",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
        "delivered_at",
    )
    list_filter = ("status", "channel", "event", "created_at")
    search_fields = ("id", "task_id", "target", "user__username")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    actions = ["resend"]
    inlines = [DeliveryAttemptInline]
    # The outbox changes only through the services (the resend action).
    readonly_fields = (
        "id",
        "event",
        "channel",
        "target",
        "user",
        "task_id",
        "status",
        "attempts",
        "next_attempt_at",
        "enqueued_at",
        "locked_until",
        "delivered_at",
        "last_error",
        "created_at",
    )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # A notification's page shows it, and nothing on it is saved: every field is the
        # outbox's, which the deliveries change under guards (a save of the whole row could
        # write back a status they had changed meanwhile). "change" stays the permission
        # the resend action asks for, over the list.
        return obj is None and super().has_change_permission(request, obj)

    @admin.action(description="Send the selected notifications again", permissions=["change"])
    def resend(self, request, queryset):
        count = services.notifications_resend(queryset=queryset)
        self.message_user(request, f"{count} notification(s) will be sent again.", messages.SUCCESS)

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.utils import timezone

from backend.common.admin import (
    BoundedSearchMixin,
    ServiceDeleteMixin,
    ServiceSaveMixin,
    each_with_service,
    held,
    log_changed,
)

from . import queue, services
from .api.serializers import EDITABLE_FIELDS, TaskUpdateSerializer
from .models import ACTIVE_STATUSES, Task, TaskStatus


class TaskForm(forms.ModelForm):
    """What PATCH may change, held to PATCH's rules (``TaskUpdateSerializer``): the model
    alone took a description of any length, where the API takes 10,000 characters."""

    class Meta:
        model = Task
        fields = EDITABLE_FIELDS

    def clean(self):
        cleaned = super().clean()
        if self._errors:
            return cleaned
        changes = {field: cleaned.get(field) for field in self.changed_data}
        serializer = TaskUpdateSerializer(data=changes)
        if serializer.is_valid():
            cleaned.update(serializer.validated_data)
            return cleaned
        for field, problems in serializer.errors.items():
            for problem in problems if isinstance(problems, list) else [problems]:
                self.add_error(field if field in self.fields else None, str(problem))
        return cleaned


@admin.register(Task)
class TaskAdmin(BoundedSearchMixin, ServiceSaveMixin, ServiceDeleteMixin, admin.ModelAdmin):
    form = TaskForm
    # Fits a 1400 px screen beside the admin's menu and filters: progress beside the status
    # of a running task, short dates; deadline and completion time on each task's page.
    list_display = (
        "name",
        "task_type",
        "state",
        "priority",
        "owner",
        "assignee",
        "created",
    )
    list_filter = ("status", "task_type", "priority", "created_at", "deadline")
    search_fields = ("id", "name", "description", "owner__username", "assignee__username")
    list_select_related = ("owner", "assignee")
    raw_id_fields = ("owner", "assignee")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    actions = ["delete_selected", "cancel_tasks", "retry_tasks", "expire_tasks"]
    # Status and results change only through the services (the actions below).
    readonly_fields = (
        "id",
        "task_type",
        "input_data",
        "status",
        "result",
        "error",
        "progress",
        "attempts",
        "max_attempts",
        "heartbeat_at",
        "enqueued_at",
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
    )

    @admin.display(description="status", ordering="status")
    def state(self, obj: Task) -> str:
        label = obj.get_status_display()
        return f"{label}\u00a0{obj.progress}%" if obj.status == "running" else label

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Task) -> str:
        return f"{obj.created_at:%m-%d %H:%M}"

    def get_readonly_fields(self, request, obj=None):
        # Only what PATCH may change (name, description, priority, deadline) stays editable;
        # the rest goes through the actions.
        return (*self.readonly_fields, "owner", "assignee", "run_at")

    def save_with_service(self, request, obj, form, change):
        # Write only the changed fields through the service, never the whole row, so a
        # worker's concurrent update of status or progress is not overwritten.
        changes = {field: form.cleaned_data[field] for field in form.changed_data}
        services.task_update(task=obj, actor=request.user, data=changes)

    def has_add_permission(self, request):
        # Tasks are submitted through the API, which validates their input.
        return False

    # Deleting follows the API's rule (services.task_delete): a running task is refused
    # until it is cancelled.
    def delete_with_service(self, request, obj):
        services.task_delete(task=obj, actor=request.user)

    @admin.action(description="Delete selected tasks", permissions=["delete"])
    def delete_selected(self, request, queryset):
        return self.delete_selected_with_service(request, queryset, "task(s)")

    def delete_many_with_service(self, request, queryset):
        """In batches, each one transaction (as ``task_delete``: the rows locked, a running
        one left); each deleted task logged as Django logs a deletion. One at a time, a
        selection of 30,000 tasks outlasted the web server's timeout half-way."""

        def log(tasks):
            self.log_deletions(request, tasks)

        deleted, running, held = services.tasks_delete(queryset=queryset, before_delete=log)
        refused = [(task, services.running_not_deleted()) for task in running]
        if held:
            self.message_user(
                request,
                f"{held} task(s) left as they are: others were changing them all along (a "
                "sweep, a worker); delete them again.",
                level=messages.WARNING,
            )
        return deleted, refused

    def _each(self, request, queryset, service, verb, statuses):
        """The service for each selected task in one of ``statuses`` (those it may act on);
        the others counted in one line, not refused one by one (a selection of 50,000
        finished tasks was two minutes of refusals)."""
        left = queryset.exclude(status__in=statuses).count()
        if left:
            which = ", ".join(statuses[:-1]) + f" or {statuses[-1]}"
            self.message_user(
                request,
                f"{left} task(s) left as they are: only {which} tasks are {verb}.",
                level=messages.WARNING,
            )

        def do(task):
            service(task=task, actor=request.user)

        with queue.sends_awaited():  # each task its own send: the request's second may be late
            each_with_service(
                self,
                request,
                queryset.filter(status__in=statuses),
                do,
                f"task(s) {verb}",
                logged=f"{verb.capitalize()} by an admin action.",
            )

    @admin.action(description="Cancel selected tasks", permissions=["change"])
    def cancel_tasks(self, request, queryset):
        self._each(request, queryset, services.task_cancel, "cancelled", ACTIVE_STATUSES)

    @admin.action(description="Retry selected tasks", permissions=["change"])
    def retry_tasks(self, request, queryset):
        retryable = (TaskStatus.FAILED, TaskStatus.CANCELLED)
        self._each(request, queryset, services.task_retry, "queued again", retryable)

    @admin.action(
        description="Expire selected tasks that are past their deadline", permissions=["change"]
    )
    def expire_tasks(self, request, queryset):
        with transaction.atomic():
            # The tasks it expires, held until it commits (a sweep's expiry waits, then
            # leaves them): each is logged in its history, and no other.
            overdue = queryset.filter(status__in=ACTIVE_STATUSES, deadline__lt=timezone.now())
            pks = held(Task, overdue)
            count = services.tasks_expire(queryset=queryset)
            log_changed(
                request,
                Task,
                pks,
                "Expired by an admin action.",
                status=TaskStatus.FAILED,
                error=services.DEADLINE_EXCEEDED,
            )
        self.message_user(request, f"{count} overdue task(s) failed with 'deadline exceeded'.")

from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework import serializers

from backend.common import outbound
from backend.tasks import types
from backend.tasks.models import Task, TaskPriority

User = get_user_model()

EDITABLE_FIELDS = ("name", "description", "priority", "deadline")


class TaskSerializer(serializers.ModelSerializer):
    """The full task, as every task endpoint answers."""

    owner_username = serializers.CharField(source="owner.username", read_only=True)
    assignee_username = serializers.CharField(
        source="assignee.username", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = Task
        fields = (
            "id",
            "name",
            "description",
            "task_type",
            "input_data",
            "priority",
            "status",
            "progress",
            "result",
            "error",
            "owner",
            "owner_username",
            "assignee",
            "assignee_username",
            "deadline",
            "run_at",
            "attempts",
            "created_at",
            "updated_at",
            "started_at",
            "completed_at",
        )
        read_only_fields = fields


class TaskCreateSerializer(serializers.Serializer):
    task_type = serializers.ChoiceField(choices=[])
    input_data = serializers.JSONField(required=False, default=dict)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    description = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=10_000
    )
    priority = serializers.ChoiceField(choices=TaskPriority.choices, default=TaskPriority.NORMAL)
    deadline = serializers.DateTimeField(required=False, allow_null=True, default=None)
    run_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    assignee = serializers.PrimaryKeyRelatedField(
        queryset=User.objects.all(),
        required=False,
        allow_null=True,
        help_text="Defaults to you; null leaves a manual task unassigned.",
    )
    callback_url = serializers.CharField(
        max_length=2048,
        required=False,
        allow_blank=True,
        default="",
        write_only=True,
        help_text="An http(s) URL receiving this task's events as signed webhooks "
        "(task.created, task.completed, task.failed, task.cancelled).",
    )

    def get_fields(self):
        fields = super().get_fields()
        fields["task_type"].choices = types.names()
        return fields

    def validate_callback_url(self, value):
        if value:
            try:
                outbound.validate_url(value)
            except outbound.OutboundRefused as exc:
                raise serializers.ValidationError(str(exc)) from None
        return value

    def validate(self, attrs):
        kind = types.get(attrs["task_type"])
        data = attrs.get("input_data")
        if not isinstance(data, dict):
            raise serializers.ValidationError({"input_data": ["Expected a JSON object."]})
        # The task's owner (the requesting user) reaches the type's input serializer, so
        # inputs that name the owner's objects (a file) can check they are theirs.
        request = self.context.get("request")
        owner = self.context.get("owner") or getattr(request, "user", None)
        inputs = kind.input_serializer(data=data, context={**self.context, "owner": owner})
        if not inputs.is_valid():
            raise serializers.ValidationError({"input_data": inputs.errors})
        attrs["input_data"] = inputs.validated_data
        _check_broker_can_hold(kind, inputs.validated_data)
        return attrs


def _check_broker_can_hold(kind: types.TaskType, input_data: dict) -> None:
    """On RabbitMQ a task must end before the server's consumer timeout, or the server cuts
    the worker's channel and hands the task out again: refuse such a task up front."""
    if not (settings.BROKER_IS_AMQP and kind.runs_on_worker):
        return
    limit = kind.time_limit_for(input_data)
    if limit >= settings.BROKER_CONSUMER_TIMEOUT:
        raise serializers.ValidationError(
            {
                "input_data": [
                    f"This task may run {limit} s, longer than the broker lets a task stay "
                    f"unacknowledged (BROKER_CONSUMER_TIMEOUT = "
                    f"{settings.BROKER_CONSUMER_TIMEOUT} s; raise RabbitMQ's consumer_timeout "
                    "and that setting together)."
                ]
            },
            code="exceeds_broker_timeout",
        )


class TaskUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    priority = serializers.ChoiceField(choices=TaskPriority.choices, required=False)
    deadline = serializers.DateTimeField(required=False, allow_null=True)

    def validate(self, attrs):
        other = sorted(set(self.initial_data) - set(EDITABLE_FIELDS))
        if other:
            raise serializers.ValidationError(
                {
                    key: [
                        "This field cannot be changed here. Only name, description, priority "
                        "and deadline can; status changes through the task's actions."
                    ]
                    for key in other
                }
            )
        return attrs


class AssignSerializer(serializers.Serializer):
    assignee = serializers.PrimaryKeyRelatedField(
        queryset=User.objects.all(), allow_null=True, help_text="null unassigns a manual task"
    )


class CompleteSerializer(serializers.Serializer):
    result = serializers.JSONField(required=False, allow_null=True, default=None)


class TaskTypeSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    runs_on_worker = serializers.BooleanField()
    max_attempts = serializers.IntegerField()
    input_schema = serializers.DictField()

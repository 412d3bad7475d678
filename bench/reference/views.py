from django.conf import settings
from django.db import transaction
from rest_framework import serializers, viewsets
from rest_framework.exceptions import ValidationError

from .jobs import run_task
from .models import Task


class TaskSerializer(serializers.ModelSerializer):
    owner_username = serializers.CharField(source="owner.username", read_only=True)

    class Meta:
        model = Task
        fields = "__all__"
        read_only_fields = ["owner", "status", "result", "error", "started_at", "completed_at"]

    def validate(self, attrs):
        numbers = attrs.get("input_data", {}).get("numbers")
        if attrs.get("task_type") == "sum" and not isinstance(numbers, list):
            raise ValidationError({"input_data": ["numbers: a list is required."]})
        return attrs


class TaskViewSet(viewsets.ModelViewSet):
    serializer_class = TaskSerializer
    filterset_fields = ["status", "task_type", "priority"]
    ordering_fields = ["created_at", "priority", "status"]

    def get_queryset(self):
        return Task.objects.filter(owner=self.request.user).select_related("owner")

    def perform_create(self, serializer):
        active = Task.objects.filter(owner=self.request.user, status__in=["pending", "running"])
        if active.count() >= settings.MAX_ACTIVE_TASKS:
            raise ValidationError("Too many active tasks.")
        task = serializer.save(owner=self.request.user)
        transaction.on_commit(lambda: run_task.delay(task.pk))

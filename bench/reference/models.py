from django.conf import settings
from django.db import models


class Task(models.Model):
    STATUSES = [(s, s) for s in ("pending", "running", "completed", "failed", "cancelled")]
    PRIORITIES = [(p, p) for p in ("low", "normal", "high", "urgent")]

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    task_type = models.CharField(max_length=50)
    input_data = models.JSONField(default=dict)
    priority = models.CharField(max_length=10, choices=PRIORITIES, default="normal")
    status = models.CharField(max_length=10, choices=STATUSES, default="pending")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "status"]), models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

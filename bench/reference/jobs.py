from celery import shared_task
from django.utils import timezone

from .models import Task


@shared_task(ignore_result=True)
def run_task(task_id: int) -> None:
    task = Task.objects.get(pk=task_id)
    task.status = "running"
    task.started_at = timezone.now()
    task.save()
    try:
        task.result = {"result": sum(task.input_data["numbers"])}
        task.status = "completed"
    except Exception as exc:
        task.status, task.error = "failed", str(exc)
    task.completed_at = timezone.now()
    task.save()

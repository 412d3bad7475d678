"""Celery entry points of the operations app: thin wrappers around its services."""

from celery import shared_task

from . import services


@shared_task(name="backend.ops.jobs.fold_task_counts", ignore_result=True, queue="maintenance")
def fold_task_counts() -> int:
    return services.task_counts_fold()

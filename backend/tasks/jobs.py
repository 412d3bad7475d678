"""Celery entry points: thin wrappers around the runner and the services."""

from celery import shared_task

from . import runner, services


@shared_task(name="backend.tasks.jobs.run_task", ignore_result=True)
def run_task(task_id: str, task_type: str = "", input_data: dict | None = None) -> str:
    return runner.execute(task_id, task_type, input_data)


@shared_task(name="backend.tasks.jobs.expire_overdue_tasks", ignore_result=True)
def expire_overdue_tasks() -> int:
    return services.tasks_expire()


@shared_task(name="backend.tasks.jobs.dispatch_tasks", ignore_result=True)
def dispatch_tasks() -> dict:
    return services.tasks_dispatch()


@shared_task(name="backend.tasks.jobs.rescue_stale_tasks", ignore_result=True)
def rescue_stale_tasks() -> dict:
    rescued = services.tasks_rescue()
    if rescued["requeued"]:
        rescued["dispatch"] = services.tasks_dispatch()
    return rescued

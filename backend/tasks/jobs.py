"""Celery entry points: thin wrappers around the runner and the services."""

from celery import shared_task
from celery.signals import worker_process_init, worker_process_shutdown
from django.db import InterfaceError, OperationalError

from . import outcomes, runner, services

# A run the database failed (it restarted, failed over, or refused connections) is asked
# again this much later, a few times, instead of waiting for the dispatcher
# (TASK_REDISPATCH_AFTER): each statement of a run is guarded, so a second delivery of a
# run that got further than it seemed does nothing twice.
DATABASE_RETRY_SECONDS = 5
DATABASE_RETRIES = 6


@shared_task(bind=True, name="backend.tasks.jobs.run_task", ignore_result=True)
def run_task(self, task_id: str, task_type: str = "", input_data: dict | None = None) -> str:
    try:
        return runner.execute(task_id, task_type, input_data)
    except (OperationalError, InterfaceError) as exc:
        if self.request.called_directly:
            raise
        # After the last retry, the error itself is raised (the dispatcher sends it later).
        raise self.retry(
            exc=exc, countdown=DATABASE_RETRY_SECONDS, max_retries=DATABASE_RETRIES
        ) from exc


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


@worker_process_init.connect
def _batch_outcomes(**kwargs) -> None:
    """A worker's pool process writes its completed instant runs in batches."""
    outcomes.start(runner.write_outcomes)


@worker_process_shutdown.connect
def _write_held_outcomes(**kwargs) -> None:
    outcomes.stop()

"""Celery entry points: thin wrappers around the services."""

from celery import shared_task

from . import services


@shared_task(name="backend.files.jobs.purge_expired_files", ignore_result=True)
def purge_expired_files() -> dict:
    return services.files_purge()

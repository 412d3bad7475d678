"""Celery entry points of the shared plumbing."""

from celery import shared_task

from . import idempotency


@shared_task(name="backend.common.jobs.purge_idempotency_keys", ignore_result=True)
def purge_idempotency_keys() -> int:
    return idempotency.idempotency_keys_purge()

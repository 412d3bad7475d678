"""Liveness and dependency checks for load balancers and ``docker compose``.

Each probe runs in a thread of its own with its own deadline (``HEALTH_CHECK_TIMEOUT``), so a
dependency that hangs is reported as such ("timed out") and ``/health/`` still answers in
about that time, naming it.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection, connections
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    content_negotiation_class,
    permission_classes,
)
from rest_framework.response import Response

from backend.celery import app as celery_app
from backend.common.commands import unapplied_migrations
from backend.common.negotiation import FirstRendererWhenNoneAccepted
from backend.ops import broker as ops_broker

logger = logging.getLogger(__name__)


class NotMigrated(RuntimeError):
    """The database lacks migrations this code needs (a deployment without ``migrate``)."""


# Set once this process has seen every migration applied: not looked at again.
_MIGRATED = threading.Event()


def check_database() -> None:
    """The database answers, and has this code's tables: an empty database, or one an
    upgrade did not migrate, answered "ok" while every request failed."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    if not _MIGRATED.is_set():
        missing = unapplied_migrations(connection)
        if missing:
            raise NotMigrated(f"{missing} migration(s) not applied: run manage.py migrate")
        _MIGRATED.set()


# No queue has this name: the health check's publish is confirmed and dropped.
HEALTH_ROUTING_KEY = "async-task-manager.health-check"


def check_broker() -> None:
    conn = celery_app.connection_for_write(
        connect_timeout=settings.HEALTH_CHECK_TIMEOUT,
        transport_options=settings.BROKER_PUBLISH_TRANSPORT_OPTIONS,
    )
    try:
        conn.ensure_connection(max_retries=0, timeout=settings.HEALTH_CHECK_TIMEOUT)
        # For the filesystem transport connecting proves little; open a channel as well
        # (for Redis this also sends a PING).
        channel = conn.default_channel
        if settings.BROKER_IS_AMQP:
            # RabbitMQ under a memory or disk alarm takes connections and blocks every
            # publish: the check is publishes it must confirm, to no queue (dropped). Two:
            # a new connection's first publish is confirmed before the broker blocks it, and
            # one alone passed under an alarm (the time went on the close, unanswered).
            producer = conn.Producer(channel)
            for _ in range(2):
                producer.publish(
                    b"", exchange="", routing_key=HEALTH_ROUTING_KEY, delivery_mode=1, retry=False
                )
    except BaseException:
        # Dropped without the closing handshake, which a blocked broker never answers.
        conn.collect()
        raise
    conn.release()


def check_cache() -> None:
    cache.set("health-check", "ok", timeout=10)
    if cache.get("health-check") != "ok":
        raise RuntimeError("the cache did not return what was stored")


def cache_is_shared() -> bool:
    """A cache server is configured (a process-local cache cannot be down)."""
    return "locmem" not in settings.CACHES["default"]["BACKEND"].lower()


CHECKS = {"database": check_database, "broker": check_broker, "cache": check_cache}
# Checks whose failure leaves the service working: "degraded" (200) with the reason, not 503
# (a load balancer would take every instance out for a cache they all share).
OPTIONAL = {
    "cache": "the cache is unavailable: the throttles let every request through",
}


def _checks_to_run() -> dict:
    return {name: check for name, check in CHECKS.items() if name != "cache" or cache_is_shared()}


def _run(check, outcome: dict, name: str) -> None:
    try:
        check()
    except Exception as exc:
        logger.warning("health check %s failed: %s", name, exc)
        # The endpoint is public: the kind of error only; its text (a server's address,
        # a user name) goes to the log.
        outcome[name] = f"error: {exc.__class__.__name__} (see the service's log)"
    else:
        outcome[name] = "ok"
    finally:
        connections.close_all()  # the thread's own database connection


def _consumes_task_queue(online: list[dict] | None) -> bool:
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    return bool(online) and any(queue in worker["queues"] for worker in online)


def _count_workers(outcome: dict) -> None:
    # A kept "no worker" is read again: a worker that just started counts at once.
    outcome["workers"] = ops_broker.workers(accept=_consumes_task_queue)


def run_checks(workers: dict | None = None) -> dict[str, str]:
    """Every probe at once, each in its own thread; one still running at the deadline is
    reported as timed out (its thread ends on its own socket timeout). With ``workers``
    given, the workers online are counted alongside (bounded by ``OPS_BROKER_TIMEOUT`` and
    kept ~10 s) and stored there as a list, or ``None`` when the broker did not say."""
    outcome: dict[str, str] = {}
    threads = []
    counter = None
    if workers is not None:
        counter = threading.Thread(target=_count_workers, args=(workers,), daemon=True)
        counter.start()
    for name, check in _checks_to_run().items():
        thread = threading.Thread(target=_run, args=(check, outcome, name), daemon=True)
        thread.start()
        threads.append((name, thread))
    deadline = time.monotonic() + settings.HEALTH_CHECK_TIMEOUT
    results = {}
    for name, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        results[name] = outcome.get(
            name, f"error: timed out after {settings.HEALTH_CHECK_TIMEOUT:g} s"
        )
    if counter is not None:
        counter.join(max(0.0, deadline - time.monotonic()))
    return results


def worker_status(online: list[dict] | None) -> tuple[int | None, str | None]:
    """The number of workers online, and why the service is degraded (``None`` when it is
    not): no worker consumes the queue new tasks go to, or the workers could not be
    counted."""
    if online is None:
        return None, "the workers online could not be counted (the broker did not answer)"
    if not _consumes_task_queue(online):
        queue = settings.CELERY_TASK_DEFAULT_QUEUE
        return len(online), f"no worker consumes the {queue!r} queue: new tasks wait"
    return len(online), None


HEALTH_BODY = inline_serializer(
    "Health",
    {
        "status": serializers.CharField(),
        "checks": serializers.DictField(child=serializers.CharField()),
        "failed": serializers.ListField(child=serializers.CharField(), required=False),
        "workers": serializers.IntegerField(
            allow_null=True,
            help_text="Celery workers online; null when they could not be "
            "counted within about a second.",
        ),
        "reason": serializers.CharField(required=False, help_text="Why the status is degraded."),
        "queues": serializers.DictField(
            child=serializers.IntegerField(),
            required=False,
            help_text="Workers online consuming each queue (when they could be counted).",
        ),
        "warnings": serializers.ListField(
            child=serializers.CharField(),
            required=False,
            help_text="What waits because no worker consumes the long or maintenance queue.",
        ),
    },
)


@extend_schema(responses={200: HEALTH_BODY, 503: HEALTH_BODY}, tags=["health"])
@api_view(["GET", "HEAD"])  # HEAD: what some load balancers probe with
@authentication_classes([])
@permission_classes([])
@content_negotiation_class(FirstRendererWhenNoneAccepted)
def health(request):
    """``{"status": "ok", "checks": {...}, "workers": n}``; 503 naming each failed or hung
    check; ``"degraded"`` (still 200, with the reason) when no worker consumes the task
    queue or the cache, which the service can do without, fails."""
    body, status = health_answer()
    return Response(body, status=status)


def health_answer() -> tuple[dict, int]:
    """The health check's body and status (``health``)."""
    workers: dict = {}
    checks = run_checks(workers)
    failed = [name for name, value in checks.items() if value != "ok" and name not in OPTIONAL]
    online = workers.get("workers")
    count, reason = worker_status(online)
    if checks.get("cache", "ok") != "ok":
        reason = "; ".join(filter(None, [reason, OPTIONAL["cache"]]))
    body = {"status": "error" if failed else "ok", "checks": checks, "workers": count}
    if online is not None:
        body["queues"] = consumers_by_queue(online)
        warnings = [
            QUEUE_WARNINGS[name]
            for name, n in body["queues"].items()
            if not n and name in QUEUE_WARNINGS
        ]
        if warnings and online:  # with no worker at all, the reason says it
            body["warnings"] = warnings
    if failed:
        body["failed"] = failed
    elif reason:
        body["status"] = "degraded"
        body["reason"] = reason
    return body, 503 if failed else 200


# What stops when no worker consumes one of the other queues: said beside an "ok" status
# (tasks of the short types still run).
QUEUE_WARNINGS = {
    "long": "no worker consumes the 'long' queue: countdown, email, reminder, file and "
    "outbound tasks and notifications wait",
    "maintenance": "no worker consumes the 'maintenance' queue: the expiry, dispatch and "
    "rescue sweeps do not run",
}


def consumers_by_queue(online: list[dict]) -> dict[str, int]:
    """How many of the workers online consume each of the service's queues."""
    return {
        name: sum(name in worker["queues"] for worker in online) for name in settings.TASK_QUEUES
    }

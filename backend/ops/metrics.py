"""``GET /metrics``: the figures of the stats API in Prometheus' text format.

A custom collector reads ``selectors.stats()`` at each scrape (the same queries and broker
reads as ``/api/admin/stats/``); nothing is written per request. Readable by staff (session
or JWT) or with ``Authorization: Bearer $METRICS_TOKEN``.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from rest_framework import authentication, permissions
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from backend.common.negotiation import FirstRenderer

from . import selectors


class StatsCollector:
    """One scrape, one read of the figures."""

    def collect(self):
        stats = selectors.stats()

        by_status = GaugeMetricFamily("atm_tasks", "Tasks by status.", labels=["status"])
        for status, n in stats["by_status"].items():
            by_status.add_metric([status], n)
        yield by_status

        by_type = GaugeMetricFamily("atm_tasks_by_type", "Tasks by type.", labels=["task_type"])
        for task_type, n in stats["by_type"].items():
            by_type.add_metric([task_type], n)
        yield by_type

        finished = GaugeMetricFamily(
            "atm_tasks_finished_last_hour",
            "Tasks completed or failed in the last 60 minutes and the current one.",
            labels=["status"],
        )
        last_minute = GaugeMetricFamily(
            "atm_tasks_finished_last_minute",
            "Tasks completed or failed in the last whole minute.",
            labels=["status"],
        )
        for status in ("completed", "failed"):
            finished.add_metric([status], sum(slot[status] for slot in stats["throughput"]))
            last_minute.add_metric([status], stats["throughput"][-2][status])
        yield finished
        yield last_minute

        run_time = GaugeMetricFamily(
            "atm_task_run_time_seconds",
            "Run time (completed_at - started_at) percentiles of the tasks completed in the "
            "last 24 hours, per type.",
            labels=["task_type", "quantile"],
        )
        runs = GaugeMetricFamily(
            "atm_tasks_completed_last_day",
            "Tasks completed in the last 24 hours, per type (the percentiles' sample).",
            labels=["task_type"],
        )
        for task_type, figures in stats["run_times"].items():
            run_time.add_metric([task_type, "0.5"], figures["p50"])
            run_time.add_metric([task_type, "0.95"], figures["p95"])
            runs.add_metric([task_type], figures["count"])
        yield run_time
        yield runs

        oldest = GaugeMetricFamily(
            "atm_oldest_pending_task_age_seconds",
            "Seconds the longest-waiting pending worker task has waited (since it was created, or "
            "its run_at when later; manual tasks left out; 0 when none is pending).",
        )
        oldest.add_metric([], stats["oldest_pending_age"] or 0)
        yield oldest

        broker_up = GaugeMetricFamily(
            "atm_broker_figures_up",
            "1 when the broker answered for the figure within the deadline, else 0.",
            labels=["figure"],
        )
        broker_up.add_metric(["queue_depth"], int(stats["queue_depth"] is not None))
        broker_up.add_metric(["workers"], int(stats["workers"] is not None))
        yield broker_up

        if stats["queue_depth"] is not None:
            depth = GaugeMetricFamily(
                "atm_queue_depth", "Messages waiting in each broker queue.", labels=["queue"]
            )
            for queue, n in stats["queue_depth"].items():
                depth.add_metric([queue], n)
            yield depth

        if stats["workers"] is not None:
            online = GaugeMetricFamily("atm_workers_online", "Celery workers online.")
            online.add_metric([], stats["workers_online"])
            yield online
            active = GaugeMetricFamily(
                "atm_worker_active_tasks", "Tasks each worker is running.", labels=["worker"]
            )
            for worker in stats["workers"]:
                active.add_metric([worker["name"]], worker["active"])
            yield active


class MetricsToken:
    """Who holds ``METRICS_TOKEN`` (a scraper, not a user)."""

    is_authenticated = True
    is_staff = False


class MetricsTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <METRICS_TOKEN>``; any other bearer token is left to the JWT
    authentication that follows."""

    def authenticate(self, request):
        token = settings.METRICS_TOKEN
        # The scheme, then the token after any blanks (a token may hold a space itself).
        parts = authentication.get_authorization_header(request).split(None, 1)
        scheme, value = parts if len(parts) == 2 else (b"", b"")
        # Compared as bytes: compare_digest refuses str holding non-ASCII (a 500 before). The
        # scheme's case does not count (RFC 9110 §11.1).
        if (
            token
            and scheme.lower() == b"bearer"
            and hmac.compare_digest(value.strip(), token.encode())
        ):
            return (MetricsToken(), "metrics-token")
        return None

    def authenticate_header(self, request):
        return 'Bearer realm="metrics"'


class StaffOrMetricsToken(permissions.BasePermission):
    def has_permission(self, request, view):
        return request.auth == "metrics-token" or bool(
            request.user and request.user.is_authenticated and request.user.is_staff
        )


class MetricsView(APIView):
    schema = None  # not part of the JSON API: documented in the README
    authentication_classes = [
        MetricsTokenAuthentication,
        *APIView.authentication_classes,
    ]
    permission_classes = [StaffOrMetricsToken]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = FirstRenderer

    def get(self, request):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StatsCollector())
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

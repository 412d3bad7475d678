"""Liveness and dependency checks for load balancers and ``docker compose``."""

import logging

from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.response import Response

from backend.celery import app as celery_app

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        # For the filesystem transport connecting proves little; open a channel as well.
        conn.default_channel  # noqa: B018 - opening the channel is the check


CHECKS = {"database": check_database, "broker": check_broker}


HEALTH_BODY = inline_serializer(
    "Health",
    {
        "status": serializers.CharField(),
        "checks": serializers.DictField(child=serializers.CharField()),
        "failed": serializers.ListField(child=serializers.CharField(), required=False),
    },
)


@extend_schema(responses={200: HEALTH_BODY, 503: HEALTH_BODY}, tags=["health"])
@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def health(request):
    """``{"status": "ok", "checks": {...}}``; 503 naming each failed check."""
    checks = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:
            logger.warning("health check %s failed: %s", name, exc)
            checks[name] = f"error: {exc.__class__.__name__}: {exc}"[:300]
        else:
            checks[name] = "ok"
    failed = [name for name, value in checks.items() if value != "ok"]
    body = {"status": "error" if failed else "ok", "checks": checks}
    if failed:
        body["failed"] = failed
    return Response(body, status=503 if failed else 200)

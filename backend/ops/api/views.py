from drf_spectacular.utils import extend_schema
from rest_framework import permissions
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import selectors
from .serializers import StatsSerializer


class StatsView(APIView):
    """Operational figures for staff (SPEC §8)."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(
        operation_id="admin_stats",
        responses={200: StatsSerializer},
        tags=["admin"],
        summary="Operational figures (staff only)",
        description="Counts by status and type, throughput per minute, run-time "
        "percentiles per type, the oldest pending task's age, queue depth per queue and "
        "the workers online. The broker's figures are read with a deadline of about a "
        "second and kept a few seconds; they are null when the broker did not answer.",
    )
    def get(self, request, format=None):
        return Response(StatsSerializer(selectors.stats()).data)

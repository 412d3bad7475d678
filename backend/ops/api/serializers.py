"""The documented shape of ``GET /api/admin/stats/`` (output only)."""

from rest_framework import serializers


class ThroughputMinuteSerializer(serializers.Serializer):
    minute = serializers.DateTimeField(help_text="Start of the minute (UTC).")
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()


class RunTimeSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Tasks of this type completed in the last 24 h.")
    p50 = serializers.FloatField(help_text="Median run time, seconds.")
    p95 = serializers.FloatField(help_text="95th percentile run time, seconds.")


class WorkerSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The worker's node name, e.g. worker-short@host.")
    queues = serializers.ListField(child=serializers.CharField())
    active = serializers.IntegerField(help_text="Tasks it is running now.")


class StatsSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    by_status = serializers.DictField(
        child=serializers.IntegerField(), help_text="Tasks per status (every status listed)."
    )
    by_type = serializers.DictField(
        child=serializers.IntegerField(), help_text="Tasks per type (every registered type)."
    )
    throughput = ThroughputMinuteSerializer(
        many=True,
        help_text="Completed and failed per minute over the last 60 minutes, oldest first; "
        "the last entry is the current minute.",
    )
    run_times = serializers.DictField(
        child=RunTimeSerializer(),
        help_text="Per type: run time (completed_at - started_at) percentiles over the "
        "tasks completed in the last 24 h; types with none are absent.",
    )
    oldest_pending_age = serializers.FloatField(
        allow_null=True,
        help_text="Seconds the longest-waiting pending worker task has waited (since it was "
        "created, or since its run_at when later; manual tasks left out); null when none is.",
    )
    queue_depth = serializers.DictField(
        child=serializers.IntegerField(),
        allow_null=True,
        help_text="Messages waiting in each broker queue (all priorities); null when the "
        "broker did not answer within about a second.",
    )
    workers_online = serializers.IntegerField(
        allow_null=True, help_text="Workers answering Celery's inspect; null when unknown."
    )
    workers = WorkerSerializer(many=True, allow_null=True)

"""The admin dashboard (staff): the stats API's figures as tables and server-rendered SVG
charts (``charts.py``), under /admin/dashboard/, linked from the admin index."""

from __future__ import annotations

from django.contrib import admin
from django.template.response import TemplateResponse

from . import charts, selectors


def dashboard(request):
    stats = selectors.stats()
    context = {
        **admin.site.each_context(request),
        "title": "Operations dashboard",
        "stats": stats,
        "throughput": charts.throughput_columns(stats["throughput"]),
        "throughput_totals": {
            status: sum(minute[status] for minute in stats["throughput"])
            for status in ("completed", "failed")
        },
        "by_status": charts.horizontal_bars(list(stats["by_status"].items())),
        "by_type": charts.horizontal_bars([(name, n) for name, n in stats["by_type"].items() if n]),
        "run_times": charts.run_time_bars(stats["run_times"]),
    }
    return TemplateResponse(request, "admin/ops/dashboard.html", context)

"""Server-rendered charts for the admin dashboard: geometry computed here, drawn as inline
SVG by the template (no JavaScript, no CDN, nothing fetched by the browser)."""

from __future__ import annotations

from typing import Any

WIDTH = 720
PLOT_LEFT = 150  # room for the labels of horizontal bars
BAR_HEIGHT = 18
BAR_GAP = 6


def figure(value: float) -> str:
    """A figure as a person reads it, never in scientific notation (``:g`` wrote 1,234,567
    tasks as 1.23457e+06 and a p95 of 3,242.5 s as 3.24e+03): a whole number with
    thousands separators, a large one rounded to one, a small one to three digits."""
    if value == int(value):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 0.001:
        return f"{value:.3g}"
    return "< 0.001"


def _nice_max(value: float) -> float:
    """A round number at or above ``value`` for the top of an axis."""
    if value <= 0:
        return 1
    step = 10 ** (len(str(int(value))) - 1)
    for multiple in (1, 2, 2.5, 5, 10):
        if value <= multiple * step:
            return multiple * step
    return 10 * step  # pragma: no cover - the loop always returns


def horizontal_bars(items: list[tuple[str, float]], unit: str = "") -> dict[str, Any]:
    """One bar per (label, value), longest = the axis maximum."""
    top = _nice_max(max((value for _, value in items), default=0))
    span = WIDTH - PLOT_LEFT - 60
    bars = []
    for i, (label, value) in enumerate(items):
        y = i * (BAR_HEIGHT + BAR_GAP)
        bars.append(
            {
                "label": label,
                "value": value,
                "text": f"{figure(value)}{unit}",
                "y": y,
                "text_y": y + BAR_HEIGHT - 5,
                "width": round(span * value / top, 1),
                "value_x": PLOT_LEFT + round(span * value / top, 1) + 6,
            }
        )
    return {
        "width": WIDTH,
        "height": max(1, len(items)) * (BAR_HEIGHT + BAR_GAP),
        "left": PLOT_LEFT,
        "label_x": PLOT_LEFT - 8,
        "bar_height": BAR_HEIGHT,
        "bars": bars,
    }


def throughput_columns(series: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacked columns per minute: completed below, failed above."""
    height, bottom, left, top_margin = 210, 20, 40, 10
    plot_width = WIDTH - left - 30
    plot_height = height - bottom - top_margin
    top = _nice_max(max((m["completed"] + m["failed"] for m in series), default=0))
    step = plot_width / max(1, len(series))
    columns = []
    for i, minute in enumerate(series):
        done_h = round(plot_height * minute["completed"] / top, 1)
        failed_h = round(plot_height * minute["failed"] / top, 1)
        x = round(left + i * step, 1)
        columns.append(
            {
                "x": x,
                "width": round(max(1.0, step - 2), 1),
                "completed_y": round(height - bottom - done_h, 1),
                "completed_h": done_h,
                "failed_y": round(height - bottom - done_h - failed_h, 1),
                "failed_h": failed_h,
                "title": f"{minute['minute']:%H:%M} UTC: {minute['completed']} completed, "
                f"{minute['failed']} failed",
            }
        )
    ticks = [
        {"y": round(height - bottom - plot_height * f, 1), "label": figure(top * f)}
        for f in (0, 0.5, 1)
    ]
    labels = [
        {"x": round(columns[i]["x"] + step / 2, 1), "text": f"{series[i]['minute']:%H:%M}"}
        for i in range(0, len(series), 10)
    ]
    return {
        "width": WIDTH,
        "height": height,
        "left": left,
        "baseline": height - bottom,
        "label_y": height - 5,
        "columns": columns,
        "ticks": ticks,
        "labels": labels,
    }


def run_time_bars(run_times: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per type, a p50 bar and a p95 bar on one seconds axis."""
    top = _nice_max(max((f["p95"] for f in run_times.values()), default=0))
    span = WIDTH - PLOT_LEFT - 90
    rows = []
    row_height = 2 * BAR_HEIGHT + 10
    for i, (task_type, figures) in enumerate(run_times.items()):
        y = i * row_height
        rows.append(
            {
                "label": task_type,
                "label_y": y + BAR_HEIGHT + 3,
                "p50_y": y,
                "p95_y": y + BAR_HEIGHT,
                "p50_w": round(span * figures["p50"] / top, 1),
                "p95_w": round(span * figures["p95"] / top, 1),
                "p50_text": f"p50 {figure(figures['p50'])} s",
                "p95_text": f"p95 {figure(figures['p95'])} s",
                "p50_x": PLOT_LEFT + round(span * figures["p50"] / top, 1) + 6,
                "p95_x": PLOT_LEFT + round(span * figures["p95"] / top, 1) + 6,
                "p50_text_y": y + BAR_HEIGHT - 5,
                "p95_text_y": y + 2 * BAR_HEIGHT - 5,
            }
        )
    return {
        "width": WIDTH,
        "height": max(1, len(rows)) * row_height,
        "left": PLOT_LEFT,
        "label_x": PLOT_LEFT - 8,
        "bar_height": BAR_HEIGHT - 2,
        "rows": rows,
    }

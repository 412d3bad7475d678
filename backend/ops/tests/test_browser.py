"""The dashboard in a real browser: headless Chromium renders it at 1400 px with its charts
visible, and asks nothing of any other host. Needs chromium (Debian: chromium-headless-shell)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from backend.tasks.tests.factories import TaskFactory
from backend.users.tests.factories import UserFactory

from .browser import BROWSER, count_colour, screenshot, serve_as

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(BROWSER is None, reason="no chromium-headless-shell or chromium here"),
]


def test_dashboard_charts_render_in_chromium_with_no_foreign_request(tmp_path):
    now = timezone.now()
    for minutes in range(0, 50, 3):
        TaskFactory(
            status="completed",
            task_type="sum",
            started_at=now - timedelta(minutes=minutes, seconds=2),
            completed_at=now - timedelta(minutes=minutes),
        )
    TaskFactory(status="failed", task_type="sum", completed_at=now - timedelta(minutes=2))
    TaskFactory.create_batch(3, status="pending", task_type="reverse")
    staff = UserFactory(is_staff=True)

    shot = tmp_path / "dashboard.png"
    with serve_as(staff) as (base, seen):
        screenshot(f"{base}/admin/dashboard/", shot, height=900)

    hosts = {host for host, _ in seen}
    assert hosts == {base.removeprefix("http://")}
    paths = [path for _, path in seen]
    assert "/admin/dashboard/" in paths
    assert all(p == "/admin/dashboard/" or p.startswith("/static/") for p in paths), paths
    # The charts' colours on screen: completed columns, failed columns, bars, percentiles.
    assert count_colour(shot, (0x2E, 0x7D, 0x32)) > 50
    assert count_colour(shot, (0xC6, 0x28, 0x28)) > 20
    assert count_colour(shot, (0x41, 0x76, 0x90)) > 200
    assert count_colour(shot, (0x26, 0x5B, 0x73)) > 50

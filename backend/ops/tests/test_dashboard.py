"""§8 the admin dashboard (staff): the stats as server-rendered SVG charts, nothing fetched
from another host; the admin index links to it; the user list shows task statistics."""

from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.utils import timezone

from backend.tasks.models import TaskStatus
from backend.tasks.tests.factories import TaskFactory
from backend.users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/dashboard/"


class Page(HTMLParser):
    """The ids, SVG elements and every URL the browser would load or follow."""

    URL_ATTRIBUTES = {"src", "href", "action", "data", "poster", "srcset", "xlink:href"}

    def __init__(self, html: str):
        super().__init__()
        self.ids, self.svgs, self.urls, self.rects = set(), 0, [], 0
        self.feed(html)
        self.html = html

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "id":
                self.ids.add(value)
            if name in self.URL_ATTRIBUTES and value:
                self.urls.append(value)
        self.svgs += tag == "svg" and ("role", "img") in attrs  # the charts, not admin icons
        self.rects += tag == "rect"

    handle_startendtag = handle_starttag


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_dashboard_draws_the_figures_as_svg_without_foreign_requests(admin_client):
    now = timezone.now()
    for status in TaskStatus.values:
        TaskFactory(status=status, task_type="sum")
    TaskFactory(
        status="completed",
        task_type="sum",
        started_at=now - timedelta(seconds=3),
        completed_at=now - timedelta(seconds=1),
    )

    response = admin_client.get(DASHBOARD)

    assert response.status_code == 200
    page = Page(response.content.decode())
    assert {"chart-throughput", "chart-status", "chart-run-times", "chart-types"} <= page.ids
    assert page.svgs == 4
    assert page.rects >= 61 * 2 + 6 + 2  # the minutes (two layers), statuses, p50/p95 of sum
    assert "completed: 2" in page.html and "p50 2 s" in page.html
    assert "No worker is online" in page.html
    for url in page.urls:  # every link and asset on this server
        assert url.startswith(("/", "#")) and not url.startswith("//"), url
    assert "url(http" not in page.html and "@import" not in page.html


def test_dashboard_is_for_staff_only(client, user):
    assert client.get(DASHBOARD).status_code == 302  # to the admin login
    client.force_login(user)
    response = client.get(DASHBOARD)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_admin_index_links_to_the_dashboard(admin_client):
    response = admin_client.get("/admin/")
    assert response.status_code == 200
    assert f'href="{DASHBOARD}"' in response.content.decode()


def test_user_list_shows_task_statistics_in_one_query(admin_client, django_assert_num_queries):
    def changelist_queries() -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get("/admin/users/user/").status_code == 200
        return len(captured)

    first = UserFactory(username="alice")
    TaskFactory.create_batch(2, owner=first, status="completed")
    TaskFactory(owner=first, status="failed")
    TaskFactory(owner=first, status="pending")
    few = changelist_queries()
    for _ in range(5):
        TaskFactory(owner=UserFactory(), status="running")
    assert changelist_queries() == few  # no query per user

    page = admin_client.get("/admin/users/user/?q=alice").content.decode()
    row = page[page.index(">alice<") :].split("</tr>")[0]
    cells = [cell.split(">")[-1] for cell in row.split("</td>")[:-1]]
    assert cells[-4:] == ["4", "1", "2", "1"]  # tasks, active, completed, failed


def test_the_charts_write_figures_as_a_person_reads_them():
    """Counts of a million tasks read 1.23457e+06 and 1e+06, a p95 of 3,242.5 s 3.24e+03."""
    from backend.ops import charts

    bars = charts.horizontal_bars([("pending", 1_234_567), ("failed", 1_000_000), ("x", 2.5)])
    assert [bar["text"] for bar in bars["bars"]] == ["1,234,567", "1,000,000", "2.5"]
    ticks = charts.throughput_columns(
        [{"minute": timezone.now(), "completed": 4_000_000, "failed": 0}]
    )["ticks"]
    assert [tick["label"] for tick in ticks] == ["0", "2,500,000", "5,000,000"]
    (row,) = charts.run_time_bars({"report_generation": {"p50": 0.0123, "p95": 3242.5}})["rows"]
    assert (row["p50_text"], row["p95_text"]) == ("p50 0.0123 s", "p95 3,242 s")
    assert charts.figure(0.0004) == "< 0.001" and charts.figure(12.345) == "12.3"

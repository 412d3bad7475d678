"""§8 ``GET /metrics``: Prometheus text, the same figures as the stats API, staff or token."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.ops import broker
from backend.tasks.models import TaskStatus
from backend.tasks.tests.factories import TaskFactory
from backend.tasks.tests.processes import wait_for

from .conftest import counted

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-for-tests-0123456789"


@pytest.fixture(autouse=True)
def _token(settings):
    settings.METRICS_TOKEN = TOKEN


def _samples(text: str) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_without_credentials_401(api_client):
    response = api_client.get("/metrics")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"]


def test_wrong_token_401_and_non_staff_403(api_client, user, client_for):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-the-token")
    assert api_client.get("/metrics").status_code == 401
    assert client_for(user).get("/metrics").status_code == 403


@pytest.mark.parametrize("value", ["\xff\xfe", "\xc3\xa9t", "é" + TOKEN[1:]])
def test_a_bearer_value_that_is_not_ascii_is_401(api_client, value):
    """compare_digest refuses str holding non-ASCII: any such header was a 500."""
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {value}")
    assert api_client.get("/metrics").status_code == 401


@pytest.mark.parametrize("scheme", ["Bearer ", "bearer ", "BEARER ", "Bearer\t", "Bearer  "])
def test_the_token_still_opens_it(api_client, scheme):
    """The scheme's case does not count (RFC 9110 §11.1): "bearer" was a 401; nor which
    blanks part it from the token, as for the API's own tokens."""
    api_client.credentials(HTTP_AUTHORIZATION=f"{scheme}{TOKEN}")
    assert api_client.get("/metrics").status_code == 200


def test_a_token_holding_a_space_opens_it(api_client, settings):
    """Any text is a token; one with a space was refused once blanks were allowed after
    the scheme."""
    settings.METRICS_TOKEN = "two words"
    api_client.credentials(HTTP_AUTHORIZATION="Bearer two words")
    assert api_client.get("/metrics").status_code == 200
    api_client.credentials(HTTP_AUTHORIZATION="Bearer two")
    assert api_client.get("/metrics").status_code == 401


def test_token_unset_lets_no_bearer_in(api_client, settings):
    settings.METRICS_TOKEN = ""
    api_client.credentials(HTTP_AUTHORIZATION="Bearer ")
    assert api_client.get("/metrics").status_code == 401


def test_token_reads_figures_that_agree_with_the_stats_api(
    api_client, staff, client_for, patient_broker_reads
):
    for status in TaskStatus.values:
        TaskFactory(status=status, task_type="sum")
    TaskFactory.create_batch(2, status="pending", task_type="reverse_string")

    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    def scraped():
        """A scrape whose broker figures were read in time (on a loaded machine, one may
        not be: ``atm_broker_figures_up`` then says 0 for it)."""
        broker.reset_cache()
        response = api_client.get("/metrics/", HTTP_ACCEPT="text/plain;version=0.0.4;q=1,*/*;q=0.1")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain")
        samples = _samples(response.content.decode())
        up = [v for (name, _), v in samples.items() if name == "atm_broker_figures_up"]
        return samples if up and all(v == 1 for v in up) else None

    samples = wait_for(scraped, timeout=30, interval=0.5, what="the broker's figures scraped")
    stats = counted(lambda: client_for(staff).get("/api/admin/stats/").json())

    for status, n in stats["by_status"].items():
        assert samples[("atm_tasks", (("status", status),))] == n
    for task_type, n in stats["by_type"].items():
        assert samples[("atm_tasks_by_type", (("task_type", task_type),))] == n
    for queue, n in stats["queue_depth"].items():
        assert samples[("atm_queue_depth", (("queue", queue),))] == n
    assert samples[("atm_workers_online", ())] == stats["workers_online"] == 0
    assert samples[("atm_oldest_pending_task_age_seconds", ())] >= 0
    assert samples[("atm_broker_figures_up", (("figure", "workers"),))] == 1
    assert samples[("atm_tasks_finished_last_hour", (("status", "completed"),))] == 0


def test_staff_session_reads_run_time_percentiles(client, staff):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    for seconds in (1, 2, 3):
        TaskFactory(
            status="completed",
            task_type="sum",
            started_at=now - timedelta(seconds=seconds + 10),
            completed_at=now - timedelta(seconds=10),
        )
    client.force_login(staff)
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = _samples(response.content.decode())
    key = ("atm_task_run_time_seconds", (("quantile", "0.5"), ("task_type", "sum")))
    assert samples[key] == pytest.approx(2.0, abs=1e-3)
    assert samples[("atm_tasks_completed_last_day", (("task_type", "sum"),))] == 3
    assert samples[("atm_tasks_finished_last_hour", (("status", "completed"),))] == 3

import pytest

from backend.ops import broker
from backend.tasks.tests.processes import Cluster, purge_filesystem_broker, wait_for


def counted(read, key: str = "workers_online") -> dict:
    """``read()`` again, each time from the broker, until its ``key`` counts the workers: it
    is null ("not known") when the ``inspect`` broadcast missed its deadline, as it can while
    other work loads the machine; so is the queue depth (its own bounded read), and a health
    probe past its deadline makes the status "error". What an answer with all of them says
    is then checked in full."""

    def answered():
        broker.reset_cache()  # read the broker now, not the few seconds old figures
        body = read()
        if body[key] is None or body.get("queue_depth", {}) is None:
            return None
        return body if body.get("status") != "error" else None

    return wait_for(answered, timeout=30, interval=0.5, what=f"the workers counted in {key!r}")


@pytest.fixture
def cluster(transactional_db, tmp_path, request):
    """Start a worker on demand (``cluster.start_worker()``); stopped at teardown."""
    purge_filesystem_broker()
    running = Cluster(tmp_path)
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _empty_queues():
    """The figures count the messages waiting in the broker: start each test with none, not
    with what earlier tests (anywhere in the suite) sent."""
    purge_filesystem_broker()

import pytest

from backend.tasks.tests.processes import Cluster, purge_filesystem_broker


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

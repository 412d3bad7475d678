import pytest

from .processes import Cluster, purge_filesystem_broker


@pytest.fixture
def cluster(transactional_db, tmp_path, request):
    """Start worker/beat on demand (``cluster.start_worker()``); all stopped at teardown."""
    purge_filesystem_broker()
    running = Cluster(tmp_path)
    yield running
    running.stop()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(running.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report

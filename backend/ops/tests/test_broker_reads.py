"""The broker reads' deadlines: a read still under way past its deadline is not started
again beside it (each /health/ probe added one under a RabbitMQ alarm, for ever), until it
has been running ``LATE_READ_LIMIT``."""

import threading

from backend.ops import broker


def test_a_late_read_is_not_started_again_beside_itself_until_given_up_on(monkeypatch):
    release, started = threading.Event(), []

    def stuck():
        started.append(1)
        release.wait(30)
        return "late"

    try:
        assert broker._bounded(stuck, 0.05, "test-read") is None
        assert broker._bounded(stuck, 0.05, "test-read") is None
        assert len(started) == 1  # the second found the first still waiting
        assert broker._bounded(lambda: "other", 0.5, "test-other-read") == "other"
        monkeypatch.setattr(broker, "LATE_READ_LIMIT", 0.0)
        assert broker._bounded(stuck, 0.05, "test-read") is None
        assert len(started) == 2  # given up on: started again
    finally:
        release.set()
        broker._late.pop("test-read", None)
    assert broker._bounded(lambda: "fresh", 0.5, "test-read") == "fresh"

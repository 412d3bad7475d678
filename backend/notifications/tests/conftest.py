import pytest

from backend.notifications import services


@pytest.fixture
def sent(monkeypatch):
    """The ids of the notifications whose delivery messages were handed to the broker,
    recorded instead of sent."""
    messages = []

    def send_messages(name, arguments, *, queue, rank=None):
        assert name == services.DELIVER and queue == services.DELIVERY_QUEUE
        assert rank == services.DELIVERY_RANK
        messages.extend(pk for (batch,) in arguments for pk in batch)
        return len(arguments)

    monkeypatch.setattr(services.queue, "send_messages", send_messages)
    return messages

import pytest

from backend.notifications import services


@pytest.fixture
def sent(monkeypatch):
    """Delivery messages handed to the broker, recorded instead of sent."""
    messages = []

    def send_messages(name, arguments, *, queue):
        messages.extend(args[0] for args in arguments)
        return len(arguments)

    monkeypatch.setattr(services.queue, "send_messages", send_messages)
    return messages

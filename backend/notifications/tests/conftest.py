import pytest

from backend.notifications import services, signing


def signed_by(request, secret: str) -> bool:
    """Whether a webhook request a test receiver got carries a signature by ``secret``, as
    a receiver checks it."""
    return signing.verify(
        secret=secret,
        msg_id=request.headers["webhook-id"],
        timestamp=int(request.headers["webhook-timestamp"]),
        body=request.body,
        signature=request.headers["webhook-signature"],
    )


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

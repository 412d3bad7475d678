"""The embedded broker's transport (``backend/common/brokers.py``) as a worker's event loop
drives it: a turn of taking messages never raises into the loop."""

import logging

from kombu import Connection, Exchange, Queue

from backend.common.brokers import Transport


def _connection(folder) -> Connection:
    data, control = folder / "data", folder / "control"
    data.mkdir(exist_ok=True)
    control.mkdir(exist_ok=True)
    return Connection(
        transport=Transport,
        transport_options={
            "data_folder_in": str(data),
            "data_folder_out": str(data),
            "control_folder": str(control),  # kombu's default is ./control
        },
    )


def test_a_turn_that_fails_is_reported_and_the_next_one_takes_what_is_there(tmp_path, caplog):
    """A message file that is not one (or the folder gone for a moment) raised out of the
    turn an acknowledgement asked for, and the worker stopped ("Unrecoverable error")."""
    received = []
    queue = Queue("q", Exchange("q", type="direct"), routing_key="q")
    with _connection(tmp_path) as connection:
        transport = connection.transport
        consumer = connection.Consumer([queue], callbacks=[lambda body, m: received.append(body)])
        consumer.consume()
        (tmp_path / "data" / "0000_bad.q.msg").write_text('{"truncated": ')
        with caplog.at_level(logging.WARNING, logger="backend.common.brokers"):
            transport._drain_ready(connection.connection)  # must not raise
        assert "messages not taken this time" in caplog.text
        connection.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key="q")
        transport._drain_ready(connection.connection)
        assert received == [{"n": 1}]
        consumer.cancel()


def test_an_exchange_table_being_created_reads_as_no_queue(tmp_path):
    """kombu created a fanout exchange's table empty, then locked and wrote it: a publish
    in between (an `inspect` broadcast as a worker starts) failed with JSONDecodeError, and
    so did a bind (a worker starting beside it failed), for as long as it stayed empty."""
    with _connection(tmp_path) as connection:
        channel = connection.default_channel
        (tmp_path / "control" / "celery.pidbox.exchange").write_text("")
        assert channel.get_table("celery.pidbox") == []
        channel._queue_bind("celery.pidbox", "", "", "w1.celery.pidbox")
        channel._queue_bind("celery.pidbox", "", "", "w2.celery.pidbox")
        channel._queue_bind("celery.pidbox", "", "", "w1.celery.pidbox")  # bound once
        assert [q.queue for q in channel.get_table("celery.pidbox")] == [
            "w2.celery.pidbox",
            "w1.celery.pidbox",
        ]
        channel._delete("w2.celery.pidbox", "celery.pidbox", "", "")
        assert [q.queue for q in channel.get_table("celery.pidbox")] == ["w1.celery.pidbox"]


def test_a_bind_never_meets_a_table_half_made(tmp_path):
    """kombu created the table empty, then locked and wrote it: a second worker binding in
    between (make run starts three at once) read it empty and failed to start. Created
    whole, every bind adds its queue to it. (Without that, 16 binds at once failed in
    three runs of four here: a race.)"""
    from backend.common.tests.concurrency import at_once

    with _connection(tmp_path) as connection:
        channel = connection.default_channel
        queues = [f"w{i}.celery.pidbox" for i in range(16)]
        outcomes = at_once(lambda i: channel._queue_bind("celery.pidbox", "", "", queues[i]), 16)
        assert [o for o in outcomes if isinstance(o, Exception)] == []
        assert sorted(q.queue for q in channel.get_table("celery.pidbox")) == sorted(queues)
        assert [p.name for p in (tmp_path / "control").iterdir()] == ["celery.pidbox.exchange"]

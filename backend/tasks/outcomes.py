"""Outcomes of instant runs written in batches, in a worker's pool process.

A run of an instant type whose message carries its input is one guarded statement
(``services.task_finish_unread``): about 0.5 ms of CPU between the process and PostgreSQL,
more than the run itself, and a round trip the process waits for before its next message.
In a pool process of a worker, such a run hands its completed outcome to a thread of the
process instead, which writes what has gathered in one statement
(``services.tasks_finish_unread``: the same guards, row by row, and the same notifications)
``TASK_OUTCOME_LINGER`` seconds (0.05) after the first of them, or at once when ``BATCH``
are waiting (later while the write before is still going on): about 0.1 ms per outcome.

What this changes, and why it loses nothing:
- A result is visible about ``TASK_OUTCOME_LINGER`` later than it was.
- The run's message is acknowledged before its outcome is written. A process that dies
  meanwhile (SIGKILL, the out-of-memory killer, its time limit's kill, its worker lost)
  takes the outcomes it held with it; their tasks are still pending in the database, as
  when a Redis worker dies holding messages it reserved, and the dispatcher sends them
  again after ``TASK_REDISPATCH_AFTER``. An instant type is a pure computation over its
  input, so running it again gives the same outcome. On RabbitMQ, which hands a dead
  process's unacknowledged messages out again at once, nothing is batched.
- A process that stops in order (the worker's warm shutdown, ``--max-tasks-per-child``)
  writes what it holds first (``close``, within ``CLOSE_TIMEOUT``).
- While the database refuses the write, it is tried again as a run's own outcome is
  (``runner.RECORD_PAUSES``); meanwhile a process holds at most ``HELD`` outcomes. A run
  that finds no room within ``ROOM_TIMEOUT`` writes its own outcome, as before (a database
  error then has its run asked again, ``jobs.run_task``).
- A row the database refuses (an error of its data) fails its own task, not the batch: the
  batch is then written an outcome at a time (``runner.write_outcomes``).

A failed run, a run of any other type, and every run outside a worker's pool processes
(``--pool=solo``, tests calling the runner) write their outcome themselves, as before."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import connections

logger = logging.getLogger(__name__)

BATCH = 100  # outcomes written at once, at most
HELD = 2 * BATCH  # outcomes a process holds before its runs wait for room
ROOM_TIMEOUT = 5.0  # seconds a run waits for room before it writes its outcome itself
CLOSE_TIMEOUT = 10.0  # seconds a stopping process gives its last write


class Batches:
    """The outcomes a pool process holds, and the thread that writes them: ``write(batch)``
    is called with up to ``BATCH`` of them in the order they came."""

    def __init__(self, write, *, linger: float, batch: int = BATCH, held: int = HELD):
        self._write = write
        self._linger, self._batch, self._held = linger, batch, held
        self._changed = threading.Condition()
        self._waiting: list[tuple[float, dict[str, Any]]] = []  # (when it came, outcome)
        self._writing = 0  # outcomes taken by the thread and not yet written
        self._closing = False
        self._thread: threading.Thread | None = None

    def add(self, outcome: dict[str, Any], timeout: float = ROOM_TIMEOUT) -> bool:
        """Holds ``outcome`` for the next write; False when no room came within
        ``timeout`` seconds (the writes do not go through: the caller writes it itself)."""
        with self._changed:
            room = self._changed.wait_for(
                lambda: len(self._waiting) + self._writing < self._held, timeout
            )
            if not room:
                return False
            self._waiting.append((time.monotonic(), outcome))
            if len(self._waiting) in (1, self._batch):  # the first one starts the linger
                self._changed.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._writes, name="outcomes", daemon=True)
                self._thread.start()
            return True

    def held(self) -> int:
        with self._changed:
            return len(self._waiting) + self._writing

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Writes what is held, then ends the thread (a process that stops)."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "%d outcomes not written before the process stopped; the dispatcher "
                    "sends their tasks again",
                    self.held(),
                )

    def _take(self) -> list[dict[str, Any]] | None:
        with self._changed:
            while not self._waiting and not self._closing:
                self._changed.wait()
            while self._waiting and len(self._waiting) < self._batch and not self._closing:
                left = self._waiting[0][0] + self._linger - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            if not self._waiting:
                return None  # closing, and nothing held
            batch = [outcome for _, outcome in self._waiting[: self._batch]]
            del self._waiting[: self._batch]
            self._writing = len(batch)
            return batch

    def _writes(self) -> None:
        try:
            while (batch := self._take()) is not None:
                try:
                    self._write(batch)
                except Exception:
                    logger.exception(
                        "%d outcomes not written; the dispatcher sends their tasks again",
                        len(batch),
                    )
                finally:
                    with self._changed:
                        self._writing = 0
                        self._changed.notify_all()
        finally:
            connections.close_all()  # this thread's own


_batches: Batches | None = None


def start(write) -> None:
    """This process is a worker's pool process: completed instant runs are batched, unless
    TASK_OUTCOME_LINGER is 0 or the broker is RabbitMQ (which hands a killed process's
    messages out again at once: there each run writes its own outcome before its message
    is acknowledged)."""
    global _batches
    if settings.TASK_OUTCOME_LINGER > 0 and not settings.BROKER_IS_AMQP:
        _batches = Batches(write, linger=settings.TASK_OUTCOME_LINGER)


def batched(outcome: dict[str, Any]) -> bool:
    """Hands ``outcome`` to the batches when this process batches and they have room;
    False otherwise (the caller writes it itself)."""
    if _batches is None:
        return False
    return _batches.add(outcome)


def stop() -> None:
    """Writes what this process holds (it stops in order)."""
    global _batches
    if _batches is not None:
        _batches.close()
        _batches = None

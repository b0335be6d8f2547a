"""The sender threads: each makes one PutRecordBatch call at a time.

The scheduler dispatches a batch only while fewer than ``config.concurrency`` are in flight,
so a batch handed here is a call that starts at once, never one that waits in a queue
behind others; its deadline runs from when it starts. Threads start as calls need them, up
to ``config.concurrency``, counted when they start and until they end: a thread stuck in a
call the deadline gave up on (a boto3 client whose server trickles its answer) still
counts, so the cap on threads, and on calls the server sees, holds.

Every send is guarded: an exception becomes an outcome (a retry, a possible duplicate).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from typing import TYPE_CHECKING

from .._core.records import Batch
from .._service.outcome import Outcome
from ..transport import Transport
from .telemetry import Telemetry

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("firehose_buffer")

#: A call still unanswered this long after its deadline is given up on: its records get an
#: outcome (retried, as possible duplicates) though its thread is still in the call.
_OVERDUE_GRACE_SECONDS = 2.0
#: A batch no sender could take: nothing was sent, so a resend cannot duplicate.
_NOT_SENT = Outcome(error="NotSent", retryable=True)


class Senders:
    """The pool of sender threads of one engine, and the calls they are making."""

    def __init__(self, engine: Engine, transport: Transport, telemetry: Telemetry) -> None:
        self.engine = engine
        self.transport = transport
        self.telemetry = telemetry
        self.max_threads = engine.config.concurrency
        self.call_timeout = engine.config.call_timeout_seconds
        self._jobs: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        #: Calls answered, for the worker's next tick (under the engine's lock).
        self._done: list[tuple[Batch, Outcome]] = []
        #: Calls started and not answered, by batch identity (under the engine's lock).
        self._calls: dict[int, Batch] = {}
        #: Threads started and not ended; those of them free for the next job; jobs queued
        #: with no thread free for them (after calls past their deadline were given up on,
        #: their threads still in the call).
        self.threads = 0
        self._idle = 0
        self._unclaimed = 0
        self._stopped = False

    def submit(self, batches: list[Batch]) -> None:
        """Hand batches to the senders (outside the engine's lock)."""
        if not batches:
            return
        engine = self.engine
        start = 0
        with engine.lock:
            if self._stopped:
                # close() stopped the senders (it gave up on the worker): these get an outcome
                # at once; the worker abandons them at its next tick.
                self._done.extend((b, _NOT_SENT) for b in batches)
                return
            for _ in batches:
                if self._idle > 0:
                    self._idle -= 1
                elif self.threads < self.max_threads:
                    self.threads += 1
                    start += 1
                else:
                    self._unclaimed += 1
        for _ in range(start):
            try:
                threading.Thread(target=self._loop, name=f"firehose-buffer-sender-{self.threads}",
                                 daemon=True).start()
            except RuntimeError:
                # No thread to be had: one job fewer can run at once. Its batch waits for a
                # running sender, or, with none, is answered "not sent" and retried later.
                with engine.lock:
                    self.threads -= 1
                    if self.threads == 0:
                        self._done.extend((b, _NOT_SENT) for b in batches)
                        return
                    self._unclaimed += 1
                log.error("could not start a sender thread; %d running", self.threads)
        for batch in batches:
            self._jobs.put(batch)

    def collect(self, now: float) -> list[tuple[Batch, Outcome]]:
        """Answers in, and calls past their deadline given up on (under the engine's lock)."""
        out, self._done = self._done, []
        limit = self.call_timeout + _OVERDUE_GRACE_SECONDS
        for key, batch in list(self._calls.items()):
            started = batch.started_at
            if started is not None and now - started > limit:
                del self._calls[key]
                out.append((batch, Outcome(error="CallTimeout", retryable=True, unknown=True)))
        return out

    def next_deadline(self) -> float | None:
        """When the first call under way passes its deadline (the worker's clock)."""
        with self.engine.lock:
            starts = [b.started_at for b in self._calls.values() if b.started_at is not None]
        if not starts:
            return None
        return min(starts) + self.call_timeout + _OVERDUE_GRACE_SECONDS

    def stop(self) -> None:
        """Let every sender thread end once it is done with its call."""
        with self.engine.lock:
            self._stopped = True
            count = self.threads
        for _ in range(count):
            self._jobs.put(None)

    def _loop(self) -> None:
        engine = self.engine
        jobs = self._jobs
        try:
            while True:
                batch = jobs.get()
                if batch is None:
                    return
                with engine.lock:
                    batch.started_at = engine.clock()
                    self._calls[id(batch)] = batch
                try:
                    outcome = self.telemetry.call(
                        batch.name, len(batch.records), batch.nbytes,
                        functools.partial(self.transport.send, batch.name, batch.payloads()),
                    )
                except Exception as exc:  # a send must never end this thread
                    log.exception("sending to %s raised; the batch will be retried", batch.name)
                    outcome = Outcome(error=type(exc).__name__, retryable=True, unknown=True)
                with engine.lock:
                    if self._unclaimed:
                        self._unclaimed -= 1  # this thread takes a job queued for none
                    else:
                        self._idle += 1
                    if self._calls.pop(id(batch), None) is not None:
                        self._done.append((batch, outcome))
                    # else: given up on already (past its deadline), or the buffer closed
                engine.worker.wake()
        finally:
            with engine.lock:
                self.threads -= 1
                self._idle = max(0, self._idle - 1)

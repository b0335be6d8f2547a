"""The worker thread that runs the scheduler, and the small pool of sender threads.

Every loop here is guarded: an exception in one unit of work becomes an outcome (a retry, a
possible duplicate, a failure) and a log line, never a dead thread or a jammed stream. Only
the scheduler's own state is touched under the lock; sending, the failure sink, logging and
callbacks run without it.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .._core.ledger import Reason
from .._core.scheduler import Batch, FlushMark, Scheduler
from ..stats import FlushResult
from ..transport import Outcome, Transport
from .failures import FailureSink
from .telemetry import Telemetry

log = logging.getLogger("firehose_buffer")

#: After a crash in the worker's own loop, wait this long before the next tick, so a bug
#: that repeats cannot spin a core.
_CRASH_PAUSE_SECONDS = 0.05
#: Results of finished flushes kept for their callers to read (each caller reads its own
#: soon after it is notified; the oldest go first).
_FLUSH_RESULTS_KEPT = 256
#: A call still unanswered this long after its deadline is given up on (its thread too).
_WATCHDOG_GRACE_SECONDS = 2.0


@dataclass(slots=True)
class _Job:
    batch: Batch
    started: float


class Worker:
    def __init__(
        self,
        scheduler: Scheduler,
        transport: Transport,
        sink: FailureSink,
        telemetry: Telemetry,
        lock: threading.Lock,
        *,
        clock: Callable[[], float],
        max_senders: int,
        call_timeout: float,
    ) -> None:
        self.scheduler = scheduler
        self.transport = transport
        self.sink = sink
        self.telemetry = telemetry
        self.lock = lock
        self.progress = threading.Condition(lock)
        self.clock = clock
        self.wakeup = threading.Event()
        #: put() wakes the worker only when this is set (it sleeps with nothing pending).
        self.sleeping = False
        self.max_senders = max_senders
        self.call_timeout = call_timeout
        self.thread: threading.Thread | None = None
        #: Run on the worker thread once it stops (set when close() is called from it, so
        #: that the rest of closing happens once the worker is done).
        self.on_stop: Callable[[], None] | None = None
        self._expected: float | None = None
        self.stopped = False
        self.closing = False
        self.abandon = False
        self.flush_requested = 0
        self._flush_marked = 0
        #: Flush generations whose records all have outcomes and whose failures are reported.
        self.flushes_done: dict[int, FlushMark] = {}
        self.done_generation = 0
        self._done: deque[tuple[Batch, Outcome]] = deque()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._senders: list[threading.Thread] = []
        self._busy = 0
        #: Sender threads the watchdog gave up on that have not come back yet.
        self._lost = 0
        self._in_flight: dict[int, _Job] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="firehose-buffer-worker",
                                       daemon=True)
        self.thread.start()

    def wake(self) -> None:
        self.sleeping = False
        self.wakeup.set()

    def stop_senders(self) -> None:
        for _ in self._senders:
            self._jobs.put(None)

    # -- the worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        wait: float | None = 0.0
        while True:
            # When the wait should end: a tick much later than that means the process did not
            # run (a freeze). Only time spent waiting counts: a slow callback is not a freeze.
            self._expected = None if wait is None else self.clock() + wait
            self.wakeup.wait(wait)
            self.wakeup.clear()
            try:
                wait = self._step()
            except Exception:
                log.exception("firehose_buffer worker step failed; carrying on")
                wait = _CRASH_PAUSE_SECONDS
            if wait is not None and wait < 0:
                break
        self.stop_senders()
        if self.on_stop is not None:
            self.on_stop()

    def _step(self) -> float | None:
        """One tick; returns how long to sleep (None: until woken; negative: stop)."""
        sched = self.scheduler
        with self.lock:
            now = self.clock()
            outcomes = []
            while self._done:
                outcomes.append(self._done.popleft())
            outcomes.extend(self._overdue(now))
            flush = None
            if self.flush_requested > self._flush_marked:
                flush = self._flush_marked = self.flush_requested
            tick = sched.tick(
                now, outcomes, flush=flush, everything=self.closing,
                abandon=Reason.CLOSED if self.abandon else None, expected=self._expected,
            )
            for batch in tick.batches:
                self._in_flight[id(batch)] = _Job(batch, now)
            if self.abandon and self._in_flight:
                # Failed already (as possibly stored): their answers no longer matter, and
                # close() must not wait for them.
                self._lost += len(self._in_flight)
                self._busy -= len(self._in_flight)
                self._in_flight.clear()
            stop = self.closing and sched.idle and not self._in_flight
        for batch in tick.batches:
            self._submit(batch)
        if tick.failures:
            self.sink.report(tick.failures)
        with self.lock:
            while sched.flushed:
                mark = sched.flushed.pop(0)
                self.flushes_done[mark.generation] = mark
                self.done_generation = max(self.done_generation, mark.generation)
            while len(self.flushes_done) > _FLUSH_RESULTS_KEPT:
                del self.flushes_done[min(self.flushes_done)]
            self.progress.notify_all()
            if stop:
                self.stopped = True
                return -1.0
            wake = tick.wake_at
            if not tick.arrived:
                # Producers are quiet: sleep until a deadline, an answer or a put() wakes
                # us. Say so first, then look once more, so a put() in between is not missed.
                self.sleeping = True
                if sched.unseen_events():
                    self.sleeping = False
                    return 0.0
            if wake is None:
                return None
        return max(0.0, wake - self.clock())

    def _overdue(self, now: float) -> list[tuple[Batch, Outcome]]:
        """Calls past their deadline: their outcome is unknown; retry them, and let the
        stuck thread go (a new one takes its place)."""
        limit = self.call_timeout + _WATCHDOG_GRACE_SECONDS
        late = [job for job in self._in_flight.values() if now - job.started > limit]
        out = []
        for job in late:
            del self._in_flight[id(job.batch)]
            self._busy -= 1
            self._lost += 1
            out.append((job.batch, Outcome(error="CallTimeout", retryable=True, unknown=True)))
        return out

    # -- flush barriers -------------------------------------------------------------------

    def flush(self, deadline: float | None) -> FlushResult:
        """Ask for a flush (everything seen is cut and marked at the next tick) and wait, until
        ``deadline`` (monotonic), for every record it covers to have an outcome and its
        failures to be reported."""
        sched = self.scheduler
        with self.lock:
            if self.stopped:
                return FlushResult(0, 0, sched.pending_events())
            self.flush_requested += 1
            generation = self.flush_requested
        self.wake()
        if threading.current_thread() is self.thread:
            # The worker cannot wait for itself: it asked; it never claims success.
            with self.lock:
                return FlushResult(0, 0, max(1, sched.pending_events()))
        with self.lock:
            self.progress.wait_for(
                lambda: self.done_generation >= generation or self.stopped,
                None if deadline is None else max(0.0, deadline - time.monotonic()),
            )
            return self._result_for(generation)

    def _result_for(self, generation: int) -> FlushResult:
        """The result of flush request ``generation`` (with the lock held). Each tick marks the
        newest request, so one mark covers every request since the last: a request's mark is
        the first whose generation is at least its own."""
        done = [g for g in self.flushes_done if g >= generation]
        if done:
            mark = self.flushes_done[min(done)]
            return FlushResult(mark.delivered, mark.failed,
                               mark.events - mark.delivered - mark.failed)
        sched = self.scheduler
        waiting = [m for m in (*sched.flushed, *sched.pending_flushes())
                   if m.generation >= generation]
        if waiting:
            mark = min(waiting, key=lambda m: m.generation)
            # Every record may have an outcome while failures are still being reported:
            # not done until they are.
            unreported = int(mark.remaining <= 0 and mark.failed > 0)
            return FlushResult(mark.delivered, mark.failed,
                               max(unreported, mark.events - mark.delivered - mark.failed))
        return FlushResult(0, 0, sched.pending_events())

    # -- senders ------------------------------------------------------------------------------

    def _submit(self, batch: Batch) -> None:
        with self.lock:
            self._busy += 1
            working = len(self._senders) - self._lost
            grow = self._busy > working and working < self.max_senders
            if grow:
                thread = threading.Thread(
                    target=self._send_loop, name=f"firehose-buffer-sender-{len(self._senders)}",
                    daemon=True)
                self._senders.append(thread)
        if grow:
            thread.start()
        self._jobs.put(_Job(batch, self.clock()))

    def _send_loop(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            batch = job.batch
            try:
                outcome = self.telemetry.call(
                    batch.name, len(batch.records), batch.nbytes,
                    functools.partial(self.transport.send, batch.name, batch.payloads()),
                )
            except Exception as exc:  # a send must never end this thread
                log.exception("sending to %s raised; the batch will be retried", batch.name)
                outcome = Outcome(error=type(exc).__name__, retryable=True, unknown=True)
            with self.lock:
                if self._in_flight.pop(id(batch), None) is None:
                    self._lost -= 1  # the watchdog gave up on it already
                    continue
                self._busy -= 1
                self._done.append((batch, outcome))
            self.wakeup.set()

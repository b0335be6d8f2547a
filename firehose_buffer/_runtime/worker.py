"""The worker thread: ticks the scheduler, hands batches to the senders and failures to the
failure sink, and decides when to look again.

Its loop is guarded: an exception in one step becomes a log line and a short pause, never a
dead thread or a jammed stream. Only the engine's state is touched under the lock; sending,
the failure sink, logging and callbacks run without it.

How it is woken: a ``queue.SimpleQueue``, whose put() is written in C and safe to call
re-entrantly (from a signal handler, a finalizer, a logging handler that interrupted a
put() on the same thread), unlike a ``threading.Event``. The same queue carries the lines
that such a re-entrant put() could not append itself (see :mod:`.guard`).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING

from .._core.ledger import Reason
from .._core.records import Failure
from .._core.runs import Run, compress_runs, compressor_for
from .._logs import RateLimitedLog
from .lifecycle import start_thread

if TYPE_CHECKING:
    from .._core.compression import Compressor
    from .._storage.segments import Segment
    from .engine import Engine

log = logging.getLogger("firehose_buffer")

#: After a crash in the worker's own loop, wait this long before the next tick, so a bug
#: that repeats cannot spin a core.
_CRASH_PAUSE_SECONDS = 0.05
#: Lines a re-entrant put() may leave for the worker before put() refuses more (counted as
#: dropped): they are held outside the memory bound.
MAX_HANDED_LINES = 10_000
_WAKE = None


class _Dropped:
    """Queued by a re-entrant put() that found the queue full: one event refused."""


DROPPED = _Dropped()


class Worker:
    """The worker thread of one engine (see the module's doc): started by the engine on first
    use, it alone ticks the scheduler and feeds the senders and the failure sink; put()
    wakes it (:meth:`wake`, :meth:`hand`) from any thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: put() wakes the worker only when this is set (it sleeps with nothing pending).
        self.sleeping = False
        self.thread: threading.Thread | None = None
        self._inbox: queue.SimpleQueue[tuple[int, bytes | Segment] | _Dropped | None] = (
            queue.SimpleQueue())
        self._claim = threading.Lock()
        self._launched = False
        self._ident: int | None = None
        self._stopped = threading.Event()
        self._expected: float | None = None
        #: With ``compression``: the worker's own (a compressor serves one thread).
        self._compressor: Compressor | None = None
        #: A failing move fails again at the next tick: said every 10 s at most.
        self._move_log = RateLimitedLog(log, interval=10.0)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._launched = True
        try:
            start_thread(self._run, "firehose-buffer-worker")
        except BaseException:
            # Maybe refused, maybe interrupted after the thread started: a later start makes
            # another, and the second of two to run leaves at once (see _run).
            self._launched = False
            raise

    def started(self) -> bool:
        """A worker thread was started for this engine (it may not run yet)."""
        return self._launched

    def is_current(self) -> bool:
        return threading.get_ident() == self._ident

    def wake(self) -> None:
        self.sleeping = False
        self._inbox.put(_WAKE)

    def hand(self, index: int, line: bytes) -> bool:
        """A re-entrant put(): queue the line for the worker; False if too many wait.
        Durable, the line is first written to a file of its own (without waiting for any
        lock), so it survives a death before the worker takes it."""
        inbox = self._inbox
        if inbox.qsize() >= MAX_HANDED_LINES:
            inbox.put(DROPPED)
            return False
        store = self.engine.store
        kept = store.keep(index, line, blocking=False) if store is not None else None
        inbox.put((index, line if kept is None else kept))
        self.sleeping = False
        return True

    def wait_stopped(self, timeout: float | None) -> bool:
        return self._stopped.wait(timeout)

    def running(self) -> bool:
        return self._launched and not self._stopped.is_set()

    # -- the worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        with self._claim:
            if self.thread is not None:
                return  # a start was repeated: one worker only
            self.thread = threading.current_thread()
            self._ident = threading.get_ident()
        engine = self.engine
        wait: float | None = 0.0
        try:
            while True:
                # When the wait should end: a tick much later than that means the process
                # did not run (a freeze). Only time spent waiting counts.
                self._expected = None if wait is None else engine.clock() + wait
                self._wait(wait)
                try:
                    wait = self._step()
                except Exception:
                    log.exception("firehose_buffer worker step failed; carrying on")
                    wait = _CRASH_PAUSE_SECONDS
                if wait is not None and wait < 0:
                    break
        finally:
            self._left_behind()
            self._stopped.set()
            engine.worker_stopped()

    def _left_behind(self) -> None:
        """Lines handed over after the last look at the inbox (a re-entrant put() that passed
        the closed check as the worker ended): counted lost, never silently gone. Durable
        ones are in files of their own, which a later buffer recovers."""
        lost = dropped = 0
        try:
            while True:
                item = self._inbox.get_nowait()
                if item is DROPPED:
                    dropped += 1  # put() returned False: counted, not lost
                elif isinstance(item, tuple) and isinstance(item[1], bytes):
                    lost += 1
        except queue.Empty:
            pass
        if lost or dropped:
            with self.engine.lock:
                self.engine.ledger.lost(lost)
                self.engine.ledger.dropped(dropped)
        if lost:
            log.warning("%d events put re-entrantly as the buffer closed were not sent: "
                        "counted in events_lost", lost)

    def _wait(self, timeout: float | None) -> None:
        """Until woken or ``timeout``; then take what re-entrant puts left in the inbox."""
        inbox = self._inbox
        handed: list[tuple[int, bytes | Segment]] = []
        dropped = 0
        try:
            item = inbox.get(True, timeout) if timeout is None or timeout > 0 else \
                inbox.get_nowait()
            while True:
                if item is DROPPED:
                    dropped += 1
                elif item is not None:
                    handed.append(item)  # type: ignore[arg-type]
                item = inbox.get_nowait()
        except queue.Empty:
            pass
        if handed or dropped:
            self.engine.intake.adopt(handed, dropped)

    def _compress(self, runs: list[Run]) -> list[Failure]:
        engine = self.engine
        if self._compressor is None:
            self._compressor = compressor_for(engine.config)
        return compress_runs(engine.scheduler, self._compressor, runs, engine.clock,
                             engine.lock)

    def _step(self) -> float | None:
        """One tick; returns how long to sleep (None: until woken; negative: stop)."""
        from .engine import State  # noqa: PLC0415  (engine imports this module)

        engine = self.engine
        sched = engine.scheduler
        senders = engine.senders
        with engine.lock:
            now = engine.clock()
            state = engine.state
            outcomes = senders.collect(now)
            # STOPPED with the worker still here: close() gave up waiting for it; it abandons
            # what is left (counted lost already) and ends, never sending it.
            closing = state in (State.DRAINING, State.ABANDONING, State.STOPPED)
            tick = sched.tick(
                now, outcomes, everything=closing,
                abandon=Reason.CLOSED if state in (State.ABANDONING, State.STOPPED) else None,
                expected=self._expected,
            )
            stop = closing and sched.idle and sched.calls_in_flight == 0
        senders.submit(tick.batches)
        if tick.move_error is not None:
            self._move_log.error("firehose_buffer: a durable stream could not move to a free "
                                 "segment (it stays in its own): %r", tick.move_error)
        failures = tick.failures
        wake_for_calls = senders.next_deadline()
        if tick.runs:
            failures = failures + self._compress(tick.runs)
        if failures:
            engine.sink.report(failures)
        if engine.store is not None:
            engine.store.warn()
        with engine.lock:
            if sched.flushes.publish():
                engine.progress.notify_all()
            if stop:
                if not self._inbox.empty():
                    return 0.0  # a re-entrant put() handed a line over just before the seal
                return -1.0
            if tick.runs or sched.room_freed():
                # The records just made go at the next tick; or the failure sink freed the
                # room records were waiting for.
                return 0.0
            wake = tick.wake_at
            if wake_for_calls is not None:
                # A call past its deadline is given up on at the next tick: be there.
                wake = wake_for_calls if wake is None else min(wake, wake_for_calls)
            if tick.sleep:
                # Producers are quiet: sleep until a deadline, an answer or a put() wakes
                # us. Say so first, then look once more, so a put() in between is not missed.
                self.sleeping = True
                if sched.unseen_events():
                    self.sleeping = False
                    return 0.0
            if wake is None:
                return None
            return max(0.0, wake - engine.clock())

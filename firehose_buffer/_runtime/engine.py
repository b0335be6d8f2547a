"""One buffer's moving parts in one process, wired once, under one lock.

The engine owns the state every thread shares: the scheduler (and through it the ledger
and the flush generations) and the lifecycle :class:`State`. All of it changes under
``lock``; the storage lock (the accumulator's) is taken inside it when both are needed, never
the other way round. Nothing that can run user code (``on_failure``, logging, a send, a
spool write) runs while either is held.

Threads (each started in the process that uses the buffer, on first use):
- callers of put(), flush(), close(), stats();
- the worker (:mod:`.worker`): ticks the scheduler, hands batches to the senders and
  failures to the sink;
- senders (:mod:`.senders`): one call each at a time, at most ``config.concurrency``;
- the replayer (:mod:`.replayer`), while what the spool directory held at start (spool files,
  the durable segments of dead processes) is fed back; durable buffers keep it running to
  recover siblings that die later.

After a fork the buffer makes a new engine (:meth:`FirehoseBuffer._after_fork`): nothing of
the parent's threads, flags, locks or queues is reused, nor its durable segment files (the
child makes its own, under a lock of its own).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from enum import Enum

from .._core.ledger import Ledger, Reason
from .._core.records import Failure, Record
from .._core.scheduler import Scheduler
from .._storage.durable import DurableStore
from .._storage.recovery import found
from .._storage.segments import MEMORY
from .._storage.spool import Spool
from ..config import BufferConfig
from ..stats import BufferStats, FlushResult
from ..transport import Transport
from .failures import FailureSink
from .guard import Guard, new_lock
from .intake import Intake
from .replayer import Replayer
from .senders import Senders
from .telemetry import Telemetry
from .worker import Worker

log = logging.getLogger("firehose_buffer")

#: Of close()'s timeout, at least this much (or this share of it, if less) is kept back from
#: flushing for failing what is left and handing it over (spool, on_failure)...
_HANDOVER_MIN_SECONDS = 1.0
_HANDOVER_MIN_FRACTION = 0.25
#: ...more when a lot is held, at this rate (spool writes run at hundreds of MB/s; this
#: leaves room for fsync and a slower disk)...
_HANDOVER_BYTES_PER_SECOND = 100 * 1024 * 1024
#: ...but never more than this share of it.
_HANDOVER_MAX_FRACTION = 0.5
#: Once close()'s time is up, how long it still waits for a hand-over already under way (one
#: spool write of at most a few MB) to end, so that it counts what was kept exactly.
_HANDOVER_FINISH_SECONDS = 1.0


class State(Enum):
    """Where one buffer is in its life (in this process)."""

    #: Made; no thread started yet.
    NEW = "new"
    #: The worker runs.
    RUNNING = "running"
    #: close() was called: everything is cut and sent; the worker stops once all of it has
    #: an outcome.
    DRAINING = "draining"
    #: close()'s time for delivering is up: what is left fails (and goes to the spool or
    #: on_failure), then the worker stops.
    ABANDONING = "abandoning"
    #: The worker has stopped, or close() gave up waiting for it.
    STOPPED = "stopped"


class Engine:
    """The stages of one buffer in one process, wired, with the lock and the state they share
    (see the module's doc): made by :class:`FirehoseBuffer`, anew after a fork."""

    def __init__(
        self,
        config: BufferConfig,
        transport: Transport,
        spool: Spool | None,
        telemetry: Telemetry,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.clock = clock
        self.spool = spool
        self.lock = new_lock()
        #: Notified (under ``lock``) when a flush is done or the worker stops.
        self.progress = threading.Condition(self.lock)
        self.ledger = Ledger()
        #: Durable segment files (``durable=True``), else None: memory.
        self.store = DurableStore(spool.directory, config.streams) if (
            config.durable and spool is not None) else None
        self.scheduler = Scheduler.for_config(config, clock(), ledger=self.ledger,
                                              backing=self.store or MEMORY)
        self.acc = self.scheduler.acc
        self.router = self.scheduler.router
        self.guard = Guard(self.lock, self.acc.lock)
        if spool is not None:
            self.guard.add(spool.lock)
        self.state = State.NEW
        self._start_lock = new_lock()
        self.guard.add(self._start_lock)
        self.sink = FailureSink(spool, config.on_failure, self)
        self.senders = Senders(self, transport, telemetry)
        self.worker = Worker(self)
        self.intake = Intake(self)
        self.replayer: Replayer | None = None
        #: Set (under the lock) when close() runs out of time: the failure sink hands nothing
        #: more over, so what close() counts as lost is exactly what is not kept.
        self.gave_up = False
        #: Events the failure sink is writing to the spool or handing to on_failure now: not
        #: lost if close() gives up meanwhile (on_failure has them; a write ends).
        self._handing = 0
        self._closer: threading.Thread | None = None
        self._close_result: FlushResult | None = None
        self._closed = threading.Event()

    # -- starting -------------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the worker (and the replay of what the spool directory holds) in this
        process, once."""
        if self.state is not State.NEW:
            return
        with self._start_lock:
            if self.state is not State.NEW:
                return
            # Before the start: if start() is interrupted after the thread is running, the
            # buffer must not start a second worker (one that does stops at once).
            self.state = State.RUNNING
            try:
                self.worker.start()
            except BaseException:
                if not self.worker.started():
                    self.state = State.NEW
                raise
            if self.spool is not None:
                sources = found(self.spool.directory)
                if sources or self.store is not None:
                    self.replayer = Replayer(self, sources, rescan=self.store is not None)
                    self.replayer.start()

    def needs_start(self) -> bool:
        """Something to do on a buffer no thread runs for: events put, or a spool (or a dead
        process's durable segments) to send."""
        with self.lock:
            if self.scheduler.pending_events():
                return True
        return self.spool is not None and bool(found(self.spool.directory))

    # -- what other parts tell the engine ---------------------------------------------------

    def handing(self, events: int) -> bool:
        """The failure sink is about to keep or hand over ``events``: False once close()
        has given up (they stay counted as lost, or in the durable files)."""
        with self.lock:
            if self.gave_up:
                return False
            self._handing += events
            return True

    def settled(self, events: int, *, spooled: bool) -> None:
        """The failure sink kept (spooled) or handed over ``events`` failed events (after
        :meth:`handing` said it may)."""
        with self.lock:
            self._handing -= events
            self.ledger.settled(events, spooled=spooled)
            self.progress.notify_all()

    def let_go(self, records: list[Record]) -> None:
        """Durable: failed records whose lines the sink kept or handed over are acknowledged
        and their segments reused."""
        with self.lock:
            self.scheduler.settle(records)

    def recovered(self, *, possible_duplicates: int, torn: int) -> None:
        """The replay found lines that may have been delivered before a death (sent again)
        and lines cut short by one (dropped)."""
        with self.lock:
            self.ledger.maybe_duplicated(possible_duplicates)
            self.ledger.torn(torn)

    def unsendable(self, stream: str, lines: dict[str, list[bytes]]) -> None:
        """Spooled lines that can never be sent (not JSON, too large): failed once, handed
        to on_failure, never spooled again."""
        count = sum(len(v) for v in lines.values())
        with self.lock:
            self.ledger.seen(count)
            self.ledger.replayed(count)
            for reason, group in lines.items():
                self.ledger.failed(reason, len(group))
        self.sink.report([Failure.of_lines(stream, reason, group)
                          for reason, group in lines.items()], respool=False)

    # -- flush ----------------------------------------------------------------------------

    def flush(self, deadline: float | None) -> FlushResult:
        """Ask for a flush and wait, until ``deadline`` (on ``clock``), for every record it
        covers to have an outcome and its failures to be reported."""
        sched = self.scheduler
        with self.lock:
            if self.state is State.STOPPED:
                return FlushResult(0, 0, sched.pending_events())
            generation = sched.flushes.request()
        self.worker.wake()
        if self.worker.is_current():
            # The worker cannot wait for itself: it asked; it never claims success.
            with self.lock:
                return FlushResult(0, 0, max(1, sched.pending_events()))
        return self._wait_flush(generation, deadline)

    def _wait_flush(self, generation: int, deadline: float | None) -> FlushResult:
        sched = self.scheduler
        with self.lock:
            self.progress.wait_for(
                lambda: sched.flushes.is_done(generation) or self.state is State.STOPPED,
                self._remaining(deadline),
            )
            return sched.flushes.result(generation, sched.pending_events())

    # -- close ----------------------------------------------------------------------------

    def close(self, timeout: float | None) -> FlushResult:
        """Deliver what was put, within ``timeout``; then fail (and hand over) what is left;
        then stop. The first caller closes; others wait for its result (within their own
        timeout). See :meth:`FirehoseBuffer.close`."""
        deadline = None if timeout is None else self.clock() + max(0.0, timeout)
        with self.lock:
            closer = self._closer
            if closer is None:
                self._closer = threading.current_thread()
        if closer is not None:
            return self._wait_close(deadline)
        try:
            result = self._close(timeout, deadline)
        finally:
            self._closed.set()
        return result

    def _wait_close(self, deadline: float | None) -> FlushResult:
        if self.worker.is_current():
            with self.lock:
                return FlushResult(0, 0, max(1, self.scheduler.pending_events()))
        self._closed.wait(self._remaining(deadline))
        with self.lock:
            if self._close_result is not None:
                return self._close_result
            return FlushResult(0, 0, max(1, self.scheduler.pending_events()))

    def _close(self, timeout: float | None, deadline: float | None) -> FlushResult:
        if self.state is State.NEW and not self.needs_start():
            self.acc.close()
            with self.lock:
                self.state = State.STOPPED
                self._close_result = FlushResult(0, 0, 0)
            self.finish()
            return self._close_result
        self.ensure_started()
        flush_deadline = self._flush_deadline(timeout, deadline)
        replayer = self.replayer
        if replayer is not None and not self.worker.is_current():
            # The spool found at start is covered too, within the time for flushing; what
            # the replay has not fed by then moves to a new spool file.
            replayer.wait(self._remaining(flush_deadline))
            replayer.stop()
            replayer.wait_fed(self._remaining(deadline))
        with self.lock:
            self.acc.close()
            if self.state is State.RUNNING:
                self.state = State.DRAINING
            generation = self.scheduler.flushes.request()
        self.worker.wake()
        if self.worker.is_current():
            # From on_failure: the worker finishes the close once it has drained.
            with self.lock:
                return FlushResult(0, 0, max(1, self.scheduler.pending_events()))
        result = self._wait_flush(generation, flush_deadline)
        if not result:
            with self.lock:
                if self.state is State.DRAINING:
                    self.state = State.ABANDONING
            self.worker.wake()
        stopped = self.worker.wait_stopped(self._remaining(deadline))
        with self.lock:
            if not stopped:
                self.gave_up = True
                # A hand-over under way (one spool write, one on_failure call) ends, and
                # counts, before what is left is counted; none starts after this.
                self.progress.wait_for(lambda: self._handing == 0, _HANDOVER_FINISH_SECONDS)
                self._give_up()
            self.state = State.STOPPED
            result = self.scheduler.flushes.result(generation, self.scheduler.pending_events())
            self._close_result = result
            self.progress.notify_all()
        self.finish()
        return result

    def _flush_deadline(self, timeout: float | None, deadline: float | None) -> float | None:
        """Of close()'s time, what is left for delivering once the hand-over is provided for."""
        if timeout is None or deadline is None:
            return None
        with self.lock:
            held = self.scheduler.outstanding_bytes + sum(
                s.staged_bytes for s in self.scheduler.streams)
        reserve = max(min(_HANDOVER_MIN_SECONDS, timeout * _HANDOVER_MIN_FRACTION),
                      held / _HANDOVER_BYTES_PER_SECOND)
        return deadline - min(reserve, timeout * _HANDOVER_MAX_FRACTION)

    def _give_up(self) -> None:
        """close() ran out of time with events neither delivered nor handed over (under the
        lock): they are lost and counted, unless durable segments hold them, for the next
        buffer using the spool directory to send."""
        left = self.scheduler.pending_events() + self.ledger.in_hand - self._handing
        if self.store is not None:
            if left:
                log.error("close() timed out: %d events were neither delivered nor kept in the "
                          "spool nor handed to on_failure; they stay in the durable segments "
                          "in %s, for the next buffer using it to send", left, self.spool and
                          self.spool.directory)
            return
        self.ledger.lost(left)
        if left:
            log.error("close() timed out: %d events were neither delivered nor kept in the "
                      "spool nor handed to on_failure, and are lost", left)

    def worker_stopped(self) -> None:
        """On the worker thread, as it ends (it stopped itself after draining)."""
        with self.lock:
            self.state = State.STOPPED
            self.progress.notify_all()
            finish = self._closer is self.worker.thread
        if finish:
            # close() was called from on_failure: it is finished here, on the worker.
            with self.lock:
                self._close_result = self.scheduler.flushes.result(
                    self.scheduler.flushes.requested, self.scheduler.pending_events())
            self._closed.set()
            self.finish()

    def finish(self) -> None:
        """Release what close() leaves: sender threads, spool files, durable segment files
        (deleted when everything in them has an outcome), connections."""
        self.senders.stop()
        if self.spool is not None:
            self.spool.close()
        if self.store is not None and not (self.gave_up and self.worker.running()):
            # Given up on with the worker still running: the files keep their lock until
            # the process ends, so that nobody recovers them while it may still send.
            self.store.close()
        self.senders.transport.close()
        self.senders.telemetry.closed(self.stats())

    # -- stats ----------------------------------------------------------------------------

    def stats(self) -> BufferStats:
        with self.lock:
            return self.scheduler.snapshot()

    def _remaining(self, deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - self.clock())


__all__ = ["Engine", "Reason", "State"]

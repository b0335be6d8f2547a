"""The public facade: put, flush, close, stats, and the wiring of the stages behind them."""

from __future__ import annotations

import atexit
import functools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

import orjson

from .accumulator import LOCK_FREE, Full
from .config import BufferConfig, Event
from .encoding import DUMPS_OPTION as _OPT
from .encoding import encode_fields as _encode_fields
from .encoding import json_default as _json_default
from .encoding import too_large as _too_large
from .encoding import unserializable as _unserializable
from .errors import (
    BufferClosedError,
    BufferFullError,
    ConfigurationError,
)
from .failures import FailureSink
from .ledger import Ledger, Reason
from .lifecycle import ARMED as _ARMED
from .lifecycle import LIVE as _LIVE
from .lifecycle import after_fork_in_child as _after_fork_in_child
from .limits import MAX_RECORD_BYTES
from .logutil import RateLimitedLog
from .replayer import Replayer
from .scheduler import Failure, Scheduler
from .spool import Spool, pending_files
from .stats import BufferStats, FlushResult, StreamStats
from .telemetry import Telemetry
from .transport import FirehoseClient, make_transport
from .worker import Worker

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

log = logging.getLogger("firehose_buffer")

_dumps = orjson.dumps
#: Of close()'s timeout, at most this much is kept back from flushing for failing (and
#: spooling or handing over) what is left, so that close() as a whole ends within it.
_ABANDON_GRACE_SECONDS = 1.0
_ABANDON_GRACE_FRACTION = 0.25
ABANDONED_AT_CLOSE = Reason.CLOSED.value
SPILLED_WHEN_FULL = Reason.BUFFER_FULL.value


class FirehoseBuffer:
    """Buffers events in memory and ships them to Firehose in the background.

    ``put()`` serializes on the caller's thread and copies the line into memory reused from
    event to event; one worker thread packs lines into 5 KB-aligned JSON Lines records,
    paces each stream under its quota and retries what fails; a few sender threads make the
    calls. Threads start on first use, in the process that uses the buffer.

    ``client``: a boto3 Firehose client; by default the buffer signs and sends requests
    itself. ``client_factory``: makes the client, again in a forked child. ``clock``:
    monotonic seconds, for tests. ``meter_provider``/``tracer_provider``: OpenTelemetry.
    """

    def __init__(
        self,
        config: BufferConfig,
        client: FirehoseClient | None = None,
        *,
        client_factory: Callable[[], FirehoseClient] | None = None,
        clock: Callable[[], float] = time.monotonic,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        if not isinstance(config, BufferConfig):
            raise ConfigurationError("config must be a BufferConfig")
        if client is not None and client_factory is not None:
            raise ConfigurationError("give client or client_factory, not both")
        if not _ARMED[0]:
            _after_fork_in_child()
        self._config = config
        self._clock = clock
        self._transport = make_transport(config, client, client_factory)
        self._spool = Spool(config.spool_dir) if config.spool_dir is not None else None
        self._max_line = min(config.max_record_bytes, MAX_RECORD_BYTES)
        self._closed = False
        ref = weakref.ref(self)
        self._telemetry = Telemetry(
            lambda: None if (b := ref()) is None else b.stats(),
            config.streams, meter_provider, tracer_provider,
        )
        self._init_state()
        self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)
        _LIVE.add(self)

    def _init_state(self) -> None:
        config = self._config
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._full_log = RateLimitedLog(log, interval=10.0)
        self._ledger = Ledger()
        self._scheduler = Scheduler.for_config(config, self._clock(), ledger=self._ledger)
        self._router = self._scheduler.router
        self._acc = self._scheduler.acc
        self._rings = self._acc.rings
        self._sink = FailureSink(self._spool, config.on_failure, self._ledger, self._lock)
        self._worker = Worker(
            self._scheduler, self._transport, self._sink, self._telemetry, self._lock,
            clock=self._clock, max_senders=config.concurrency,
            call_timeout=config.call_timeout_seconds,
        )
        self._replayer: Replayer | None = None
        self._started = False
        self._start_lock = threading.Lock()

    def _ensure_started(self) -> None:
        """Start the worker (and the spool replay) in this process, once."""
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            self._worker.start()
            if self._spool is not None:
                files = pending_files(self._spool.directory)
                if files:
                    self._replayer = Replayer(self, files)
                    self._replayer.start()
            self._started = True

    @property
    def config(self) -> BufferConfig:
        return self._config

    # -- put --------------------------------------------------------------------------------

    def put(self, event: Event) -> bool:
        """Queue one event; return False only if ``on_full="drop"`` dropped it (or
        ``"spill"`` could not write it to the spool).

        Raises :class:`EventTypeError`/:class:`EventValueError` for bad input (nothing is
        buffered), :class:`BufferFullError` and :class:`BufferClosedError`.
        """
        if type(event) is dict:
            try:
                line = _dumps(event, default=_json_default, option=_OPT)
            except TypeError as exc:
                raise _unserializable(exc) from exc
            if len(line) > self._max_line:
                raise _too_large(len(line), self._max_line)
            index = self._router.route(event, event) if self._router.keyed else (
                self._router.sticky)
        else:
            line, fields = _encode_fields(event, self._max_line)
            index = self._router.route(event, fields) if self._router.keyed else (
                self._router.sticky)
        if not _ARMED[0]:
            _after_fork_in_child()
        if LOCK_FREE:
            # One expression: loading the mmap and writing to it cannot be split by a thread
            # switch (see accumulator.py).
            try:
                self._rings[index].mm.write(line)
            except ValueError:
                return self._put_slow(index, line)
        else:
            return self._put_slow(index, line)
        if self._worker.sleeping:
            self._worker.wake()
        return True

    def _put_slow(self, index: int, line: bytes) -> bool:
        acc = self._acc
        deadline: float | None = None
        with acc.lock:
            while True:
                if acc.closed:
                    raise BufferClosedError("put() after close()")
                try:
                    acc.slow_append(index, line)
                    appended = True
                    break
                except Full:
                    pass
                on_full = self._config.on_full
                if on_full in ("drop", "spill"):
                    appended = False
                    break
                if on_full == "raise" or _on_event_loop():
                    raise BufferFullError(
                        f"buffer holds {self._config.max_buffer_bytes} bytes (max_buffer_bytes)")
                if deadline is None:
                    deadline = time.monotonic() + self._config.max_block_seconds
                    self._worker.wake()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or threading.current_thread() is self._worker.thread:
                    # The worker makes the room: it must never wait for it itself.
                    raise BufferFullError(
                        f"buffer stayed full for max_block_seconds="
                        f"{self._config.max_block_seconds}")
                acc.room.wait(remaining)
        if not appended:
            return self._when_full(index, line)
        self._ensure_started()
        self._worker.wake()
        return True

    def _when_full(self, index: int, line: bytes) -> bool:
        """on_full is "drop" or "spill": count, say so, maybe spill (outside every lock)."""
        config = self._config
        spool = self._spool
        if config.on_full == "spill" and spool is not None:
            kept = spool.append(config.streams[index], line, sync=False)
            with self._lock:
                if kept:
                    self._ledger.events_put += 1
                    self._ledger.failed(SPILLED_WHEN_FULL, 1)
                    self._ledger.events_spooled += 1
                else:
                    self._ledger.events_dropped += 1
            if kept:
                self._full_log.warning("buffer full (max_buffer_bytes=%d): event spilled to %s",
                                       config.max_buffer_bytes, spool.directory)
                return True
            self._full_log.warning("buffer full and the spool failed: event dropped")
            return False
        with self._lock:
            self._ledger.events_dropped += 1
        self._full_log.warning("buffer full (max_buffer_bytes=%d): event dropped",
                               config.max_buffer_bytes)
        return False

    def _append_replayed(self, index: int, line: bytes, stop: threading.Event) -> bool:
        """The replay's way in: the same accumulator, waiting for room as long as it takes."""
        acc = self._acc
        with acc.lock:
            while True:
                if acc.closed or stop.is_set():
                    return False
                try:
                    acc.slow_append(index, line)
                    break
                except Full:
                    self._worker.wake()
                    acc.room.wait(0.25)
        with self._lock:
            self._ledger.events_replayed += 1
        self._worker.wake()
        return True

    # -- flush and close --------------------------------------------------------------------

    def flush(self, timeout: float | None = 10.0) -> FlushResult:
        """Send everything put before this call (and what the spool held at start), ignoring
        linger; wait for every outcome, failures reported, within ``timeout``.

        The result is truthy only when all of it was delivered. From the worker thread (an
        ``on_failure`` callback) it only asks for the flush, since the worker cannot wait
        for itself.
        """
        if not _ARMED[0]:
            _after_fork_in_child()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        if not self._started and self._spool is None:
            with self._lock:
                if not self._pending_now():
                    return FlushResult(0, 0, 0)  # never used: nothing to start threads for
        # Also when a put() on another thread has written but not yet started the worker.
        self._ensure_started()
        if self._replayer is not None:
            self._replayer.wait(_remaining(deadline))
        return self._flush_until(deadline)

    def _pending_now(self) -> int:
        """Events accepted and without an outcome (call with the lock held)."""
        sch = self._scheduler
        return (sch.outstanding_events + sum(s.staged_events for s in sch.streams)
                + sch.unseen_events())

    def _flush_until(self, deadline: float | None) -> FlushResult:
        worker = self._worker
        with self._lock:
            if worker.stopped:
                return FlushResult(0, 0, self._pending_now())
            worker.flush_requested += 1
            generation = worker.flush_requested
        worker.wake()
        if threading.current_thread() is worker.thread:
            # The worker cannot wait for itself: it asked; it never claims success.
            with self._lock:
                return FlushResult(0, 0, max(1, self._pending_now()))
        with self._lock:
            worker.progress.wait_for(
                lambda: worker.done_generation >= generation or worker.stopped,
                _remaining(deadline),
            )
            return self._result_for(generation)

    def _result_for(self, generation: int) -> FlushResult:
        """The result of flush request ``generation`` (call with the lock held). The worker
        marks the newest request each tick, so one mark covers every request since the last:
        a request's mark is the first whose generation is at least its own."""
        worker = self._worker
        done = [g for g in worker.flushes_done if g >= generation]
        if done:
            mark = worker.flushes_done[min(done)]
            return FlushResult(mark.delivered, mark.failed,
                               mark.events - mark.delivered - mark.failed)
        sch = self._scheduler
        waiting = [m for m in (*sch.flushed, *sch.pending_flushes()) if m.generation >= generation]
        if waiting:
            mark = min(waiting, key=lambda m: m.generation)
            # Every record may have an outcome while failures are still being reported:
            # not done until they are.
            unreported = int(mark.remaining <= 0 and mark.failed > 0)
            return FlushResult(mark.delivered, mark.failed,
                               max(unreported, mark.events - mark.delivered - mark.failed))
        return FlushResult(0, 0, self._pending_now())

    def close(self, timeout: float | None = 10.0) -> FlushResult:
        """Flush, then stop the threads; idempotent. put() raises BufferClosedError after.

        Returns within ``timeout`` (``None``: wait for every outcome). Events not delivered
        by then are failed (reason ``"closed_before_delivery"``): written to the spool when
        there is one, else handed to ``on_failure``, before close() returns; what could not
        be handed over in time is logged with its number and counted in ``events_lost``.
        """
        if not _ARMED[0]:
            _after_fork_in_child()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        first = not self._closed
        self._closed = True
        self._acc.close()
        if first:
            atexit.unregister(self._exit_hook)
            _LIVE.discard(self)
        worker = self._worker
        if not self._started:
            self._finish_close()
            return FlushResult(0, 0, 0)
        if threading.current_thread() is worker.thread:
            # From on_failure: the worker finishes the close once it has drained.
            worker.on_stop = self._finish_close
            with self._lock:
                worker.closing = True
            worker.wake()
            with self._lock:
                return FlushResult(0, 0, max(1, self._pending_now()))
        with self._lock:
            worker.closing = True
        if self._replayer is not None:
            self._replayer.stop()
        grace = None if timeout is None else min(_ABANDON_GRACE_SECONDS,
                                                 timeout * _ABANDON_GRACE_FRACTION)
        flush_deadline = None if deadline is None or grace is None else deadline - grace
        result = self._flush_until(flush_deadline)
        if not result:
            with self._lock:
                worker.abandon = True
            worker.wake()
        thread = worker.thread
        if thread is not None:
            thread.join(_remaining(deadline))
        if thread is not None and thread.is_alive():
            self._count_lost()
        worker.stop_senders()
        self._finish_close()
        return result

    def _count_lost(self) -> None:
        """close() ran out of time with events neither delivered nor handed over."""
        with self._lock:
            lost = self._pending_now() + self._sink.in_hand
            self._ledger.events_lost += lost
        if lost:
            log.error("close() timed out: %d events were neither delivered nor kept in the "
                      "spool nor handed to on_failure, and are lost", lost)

    def _finish_close(self) -> None:
        if self._spool is not None and not (
            self._worker.thread is not None and self._worker.thread.is_alive()
        ):
            self._spool.close()
        self._transport.close()
        self._telemetry.closed(self.stats())

    async def aflush(self, timeout: float | None = 10.0) -> FlushResult:
        """:meth:`flush` without blocking the event loop."""
        import asyncio  # noqa: PLC0415  (an import that costs a Lambda cold start ~30 ms)

        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = 10.0) -> FlushResult:
        """:meth:`close` without blocking the event loop."""
        import asyncio  # noqa: PLC0415

        return await asyncio.to_thread(self.close, timeout)

    def __enter__(self) -> FirehoseBuffer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> FirehoseBuffer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def wait_for_replay(self, timeout: float | None = None) -> bool:
        """Wait until the spool files found at start have each been re-sent (or handed back
        to the spool); True if so within ``timeout``. True at once without a spool."""
        if self._spool is None:
            return True
        self._ensure_started()
        return self._replayer is None or self._replayer.wait(timeout)

    # -- stats ------------------------------------------------------------------------------

    def stats(self) -> BufferStats:
        """A consistent snapshot of the counters."""
        if not _ARMED[0]:
            _after_fork_in_child()
        with self._lock:
            sch = self._scheduler
            c = self._ledger
            unseen = sch.unseen_events()
            staged = sum(s.staged_events for s in sch.streams)
            return BufferStats(
                events_put=c.events_put + unseen,
                events_delivered=c.events_delivered,
                events_failed=c.events_failed,
                events_dropped=c.events_dropped,
                events_buffered=staged + sch.outstanding_events + unseen,
                bytes_buffered=sum(s.staged_bytes for s in sch.streams) + sch.outstanding_bytes,
                records_sent=c.records_sent,
                bytes_sent=c.bytes_sent,
                billed_bytes=c.billed_bytes,
                requests_sent=c.requests_sent,
                throttled_records=c.throttled_records,
                throttled_requests=c.throttled_requests,
                retried_records=c.retried_records,
                possible_duplicates=c.possible_duplicates,
                last_error=c.last_error,
                failures_by_reason=dict(c.failures),
                streams=tuple(
                    StreamStats(
                        name=s.name,
                        allowed_share=s.limiter.share,
                        allowed_bytes_per_second=s.limiter.bytes_per_second,
                        backlog_bytes=s.backlog_bytes,
                        records_sent=s.records_sent,
                        bytes_sent=s.bytes_sent,
                        throttled_records=s.throttled_records,
                    )
                    for s in sch.streams
                ),
                events_spooled=c.events_spooled,
                events_replayed=c.events_replayed,
                events_lost=c.events_lost,
            )

    def _report(self, failures: list[Failure], *, respool: bool = True) -> None:
        self._sink.report(failures, respool=respool)

    # -- fork -------------------------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a forked child: start empty, with fresh locks; threads start on first use.
        The parent's events stay the parent's to send; connections are not shared."""
        if self._pid == os.getpid():
            return
        if self._replayer is not None:
            self._replayer.after_fork()
        if self._spool is not None:
            self._spool.after_fork()
        self._transport.after_fork()
        closed = self._closed
        self._init_state()
        if closed:
            self._acc.close()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _on_event_loop() -> bool:
    """True on a thread running an asyncio loop, which put() must never block."""
    asyncio = sys.modules.get("asyncio")  # never imported: no loop can be running
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _close_at_exit(ref: weakref.ReferenceType[FirehoseBuffer]) -> None:
    buffer = ref()
    if buffer is not None and buffer._pid == os.getpid():
        buffer.close(buffer.config.exit_timeout_seconds)


__all__ = ["FirehoseBuffer"]

"""The public facade: put, flush, close, stats, and the wiring of the stages behind them."""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

import orjson

from ._core.encoding import DUMPS_OPTION as _OPT
from ._core.encoding import encode_fields as _encode_fields
from ._core.encoding import json_default as _json_default
from ._core.encoding import too_large as _too_large
from ._core.encoding import unserializable as _unserializable
from ._core.ledger import Ledger
from ._core.scheduler import Scheduler
from ._runtime.failures import FailureSink
from ._runtime.intake import Intake
from ._runtime.lifecycle import ARMED as _ARMED
from ._runtime.lifecycle import LIVE as _LIVE
from ._runtime.lifecycle import after_fork_in_child as _after_fork_in_child
from ._runtime.replayer import Replayer
from ._runtime.telemetry import Telemetry
from ._runtime.worker import Worker
from ._service.firehose import FIREHOSE
from ._storage.segments import LOCK_FREE
from ._storage.spool import Spool, pending_files
from .config import BufferConfig, Event
from .errors import ConfigurationError
from .stats import BufferStats, FlushResult
from .transport import FirehoseClient, make_transport

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

log = logging.getLogger("firehose_buffer")

_dumps = orjson.dumps
#: Of close()'s timeout, at most this much is kept back from flushing for failing (and
#: spooling or handing over) what is left, so that close() as a whole ends within it.
_ABANDON_GRACE_SECONDS = 1.0
_ABANDON_GRACE_FRACTION = 0.25


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
        self._max_line = min(config.max_record_bytes, FIREHOSE.max_record_bytes)
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
        self._intake = Intake(config, acc=self._acc, worker=self._worker, spool=self._spool,
                              ledger=self._ledger, lock=self._lock,
                              ensure_started=self._ensure_started)
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
                return self._intake.slow(index, line)
        else:
            return self._intake.slow(index, line)
        if self._worker.sleeping:
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
                if not self._scheduler.pending_events():
                    return FlushResult(0, 0, 0)  # never used: nothing to start threads for
        # Also when a put() on another thread has written but not yet started the worker.
        self._ensure_started()
        if self._replayer is not None:
            self._replayer.wait(_remaining(deadline))
        return self._worker.flush(deadline)

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
        grace = None if timeout is None else min(_ABANDON_GRACE_SECONDS,
                                                 timeout * _ABANDON_GRACE_FRACTION)
        flush_deadline = None if deadline is None or grace is None else deadline - grace
        first = not self._closed
        self._closed = True
        if first:
            atexit.unregister(self._exit_hook)
            _LIVE.discard(self)
        worker = self._worker
        if not self._started:
            with self._lock:
                pending = self._scheduler.pending_events()
            if pending or (self._spool is not None and pending_files(self._spool.directory)):
                self._ensure_started()  # what was put, and the spool found at start, go too
        replayer = self._replayer
        if replayer is not None and threading.current_thread() is not worker.thread:
            # The spool found at start is covered too, within the time for flushing; what
            # the replay has not fed by then moves to a new spool file.
            replayer.wait(_remaining(flush_deadline))
            replayer.stop()
            replayer.wait(_remaining(deadline))
        self._acc.close()
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
                return FlushResult(0, 0, max(1, self._scheduler.pending_events()))
        with self._lock:
            worker.closing = True
        result = self._worker.flush(flush_deadline)
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
            lost = self._scheduler.pending_events() + self._sink.in_hand
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
            return self._scheduler.snapshot()

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


def _close_at_exit(ref: weakref.ReferenceType[FirehoseBuffer]) -> None:
    buffer = ref()
    if buffer is not None and buffer._pid == os.getpid():
        buffer.close(buffer.config.exit_timeout_seconds)


__all__ = ["FirehoseBuffer"]

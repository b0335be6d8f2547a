"""The public facade: put, flush, close, stats. The stages behind it are wired by the engine
(``_runtime/engine.py``); put()'s fast path is inlined here, since every nanosecond of it is
paid per event."""

from __future__ import annotations

import atexit
import functools
import os
import time
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

from ._core.encoding import DUMPS_OPTION as _OPT
from ._core.encoding import encode_fields as _encode_fields
from ._core.encoding import json_default as _json_default
from ._core.encoding import too_large as _too_large
from ._core.encoding import unserializable as _unserializable
from ._runtime.engine import Engine
from ._runtime.event_ids import EventIds
from ._runtime.lifecycle import ARMED as _ARMED
from ._runtime.lifecycle import LIVE as _LIVE
from ._runtime.lifecycle import after_fork_in_child as _after_fork_in_child
from ._runtime.telemetry import Telemetry
from ._storage import durable as _durable
from ._storage.segments import LOCK_FREE, segment_size
from ._storage.spool import Spool
from .config import BufferConfig, Event
from .errors import ConfigurationError
from .stats import BufferStats, FlushResult
from .transport import FirehoseClient, Transport, make_transport

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

_dumps = orjson.dumps
_BYTES_LIKE = (bytes, bytearray, memoryview)


class FirehoseBuffer:
    """Buffers events in memory and ships them to Firehose in the background.

    ``put()`` serializes on the caller's thread and copies the line into memory reused from
    event to event; one worker thread packs lines into 5 KB-aligned JSON Lines records,
    paces each stream under its quota and retries what fails; a few sender threads make the
    calls. Threads start on first use, in the process that uses the buffer.

    ``client``: a boto3 Firehose client; by default the buffer signs and sends requests
    itself. ``client_factory``: makes the client, again in a forked child. ``transport``:
    anything with the :class:`~firehose_buffer.transport.Transport` methods, instead of
    either (tests, other HTTP stacks). ``clock``: monotonic seconds, for tests.
    ``meter_provider``/``tracer_provider``: OpenTelemetry.
    """

    def __init__(
        self,
        config: BufferConfig,
        client: FirehoseClient | None = None,
        *,
        client_factory: Callable[[], FirehoseClient] | None = None,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        if not isinstance(config, BufferConfig):
            raise ConfigurationError("config must be a BufferConfig")
        if sum(x is not None for x in (client, client_factory, transport)) > 1:
            raise ConfigurationError("give one of client, client_factory and transport")
        if not _ARMED[0]:
            _after_fork_in_child()
        self._config = config
        self._clock = clock
        self._transport = transport if transport is not None else make_transport(
            config, client, client_factory)
        self._spool = Spool(config.spool_dir) if config.spool_dir is not None else None
        if config.durable and self._spool is not None:
            _durable.probe(self._spool.directory, segment_size(
                config.max_buffer_bytes, len(config.streams), config.record_target_bytes))
        self._max_line = config.max_line_bytes
        self._closed = False
        ref = weakref.ref(self)
        self._telemetry = Telemetry(
            lambda: None if (b := ref()) is None else b.stats(),
            config.streams, meter_provider, tracer_provider,
        )
        self._new_engine()
        self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)
        _LIVE.add(self)

    def _new_engine(self) -> None:
        """Everything this process runs for the buffer, made anew (at start, after fork)."""
        engine = Engine(self._config, self._transport, self._spool, self._telemetry,
                        self._clock)
        self._pid = os.getpid()
        self._engine = engine
        # What put()'s fast path reads, one attribute each.
        self._router = engine.router
        self._rings = engine.acc.rings
        self._worker = engine.worker
        self._intake = engine.intake
        field = self._config.event_id_field
        # Made with each engine: a forked child draws its own random bits.
        self._ids = EventIds(field) if field is not None else None
        self._id_field = field

    @property
    def config(self) -> BufferConfig:
        return self._config

    # -- put --------------------------------------------------------------------------------

    def put(self, event: Event) -> bool:
        """Queue one event; return False only if the buffer was full and ``on_full`` said
        to drop it (``"drop"``, or ``"spill"`` when the spool could not take it).

        Raises :class:`EventTypeError`/:class:`EventValueError` for bad input (nothing is
        buffered), :class:`BufferFullError` and :class:`BufferClosedError`. May be called
        from any thread, from a signal handler and from a finalizer (``__del__``): a put()
        that re-enters one in progress on the same thread never waits for it.
        """
        if not _ARMED[0]:
            _after_fork_in_child()
        if type(event) is dict:
            try:
                line = _dumps(event, default=_json_default, option=_OPT)
            except TypeError as exc:
                raise _unserializable(exc) from exc
            fields: Mapping[str, Any] = event
        else:
            line, fields = _encode_fields(event, self._max_line)
        if self._ids is not None and self._id_field not in fields and not isinstance(
                event, _BYTES_LIKE):
            line = self._ids.stamp(line)
        if len(line) > self._max_line:
            raise _too_large(len(line), self._max_line)
        router = self._router
        index = router.route(event, fields) if router.keyed else router.sticky
        if LOCK_FREE:
            # One expression: loading the current segment and writing to it cannot be split
            # by a thread switch or a signal handler (see _storage/segments.py).
            try:
                self._rings[index][-1].write(line)
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
        engine = self._live()
        deadline = None if timeout is None else self._clock() + max(0.0, timeout)
        if self._spool is None and not engine.worker.started() and not engine.needs_start():
            return FlushResult(0, 0, 0)  # never used: nothing to start threads for
        # Also when a put() on another thread has written but not yet started the worker.
        engine.ensure_started()
        replayer = engine.replayer
        if replayer is not None:
            replayer.wait(engine._remaining(deadline))
        return engine.flush(deadline)

    def close(self, timeout: float | None = 10.0) -> FlushResult:
        """Flush, then stop the threads; idempotent. put() raises BufferClosedError after.

        Returns within ``timeout`` (``None``: wait for every outcome) what became of the
        events put before it. Events not delivered by then are failed (reason
        ``"closed_before_delivery"``): written to the spool when there is one, else handed
        to ``on_failure``, before close() returns; what could not be handed over in time is
        logged with its number and counted in ``events_lost``. A second close() waits for
        the first and returns its result.
        """
        engine = self._live()
        if not self._closed:
            # Still in LIVE: a child forked while this close() runs gets a closed buffer
            # of its own (put() raises), never this one's half-closed state.
            self._closed = True
            atexit.unregister(self._exit_hook)
        return engine.close(timeout)

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
        engine = self._live()
        engine.ensure_started()
        replayer = engine.replayer
        return replayer is None or replayer.wait(timeout)

    # -- stats ------------------------------------------------------------------------------

    def stats(self) -> BufferStats:
        """A consistent snapshot of the counters."""
        return self._live().stats()

    # -- the process ------------------------------------------------------------------------

    def _live(self) -> Engine:
        """The engine of this process (a forked child makes its own first)."""
        if not _ARMED[0]:
            _after_fork_in_child()
        return self._engine

    def _after_fork(self) -> None:
        """In a forked child: start empty, with everything the engine holds made anew;
        threads start on first use. The parent's events stay the parent's to send, its
        spool files and connections its own."""
        if self._pid == os.getpid():
            return
        old = self._engine
        if old.replayer is not None:
            old.replayer.after_fork()
        if old.store is not None:
            old.store.after_fork()  # the parent's files: never written from here
        if self._spool is not None:
            self._spool.after_fork()
        # The new engine first: the transport's reset runs user code (a client_factory) that
        # may put() into this very buffer.
        self._new_engine()
        if self._closed:
            self._engine.acc.close()
        self._transport.after_fork()


def _close_at_exit(ref: weakref.ReferenceType[FirehoseBuffer]) -> None:
    buffer = ref()
    if buffer is not None and buffer._pid == os.getpid():
        buffer.close(buffer.config.exit_timeout_seconds)


__all__ = ["FirehoseBuffer"]

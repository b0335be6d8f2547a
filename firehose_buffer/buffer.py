"""The public facade: put, flush, close, stats; the worker thread and the sender threads."""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING

import orjson

from .client import make_client
from .config import BufferConfig, Event
from .errors import (
    BufferClosedError,
    BufferFullError,
    ConfigurationError,
    EventTooLargeError,
    EventTypeError,
    EventValueError,
)
from .lifecycle import ARMED as _ARMED
from .lifecycle import LIVE as _LIVE
from .lifecycle import after_fork_in_child as _after_fork_in_child
from .limits import MAX_RECORD_BYTES
from .logutil import RateLimitedLog
from .pipeline import Batch, Failure, Pipeline
from .routing import roomiest, stable_index
from .sender import FirehoseClient, Outcome, put_record_batch
from .spool import Claim, Spool, SpoolFile, claim, pending_files
from .stats import BufferStats, FlushResult, StreamStats
from .telemetry import Telemetry

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

log = logging.getLogger("firehose_buffer")

_dumps = orjson.dumps
_OPT = orjson.OPT_APPEND_NEWLINE
_getpid = os.getpid
#: Of close()'s timeout, at most this much is kept back from flushing for failing (and
#: spooling) what is left, so that close() as a whole ends within its timeout.
_ABANDON_GRACE_SECONDS = 1.0
_ABANDON_GRACE_FRACTION = 0.25
#: The worker may hold the lock for a millisecond or more while it packs: past this many
#: yields a producer sleeps on the lock instead of spinning.
_YIELDS_BEFORE_BLOCKING = 50
ABANDONED_AT_CLOSE = "closed_before_delivery"
#: The failure reason of events spilled to the spool by ``on_full="spill"``.
SPILLED_WHEN_FULL = "buffer_full"
#: How often a replay waiting for room looks again (it is also woken as room appears).
_REPLAY_POLL_SECONDS = 0.25


def _acquire_contended(lock: threading.Lock) -> None:
    """Take a lock another thread holds, yielding the GIL to it rather than sleeping on the lock.

    A producer that sleeps on the lock while its holder waits for the GIL turns every later
    put() into a hand-over between sleeping threads (a lock convoy): measured, 8 producers then
    reach a quarter of one producer's throughput. Yielding lets the holder finish at once.
    """
    for _ in range(_YIELDS_BEFORE_BLOCKING):
        time.sleep(0)
        if lock.acquire(False):
            return
    lock.acquire()


class _Shard:
    """Lines put for one stream since the worker last took them."""

    __slots__ = ("first", "lines", "nbytes", "staged")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.nbytes = 0
        self.first = 0.0
        #: Bytes the worker holds for this stream, not yet in a record (as of its last look):
        #: with ``nbytes``, how close the stream is to a full record.
        self.staged = 0


class FirehoseBuffer:
    """Buffers events in memory and ships them to Firehose in the background.

    ``put()`` serializes on the caller's thread and returns at once; one worker thread packs
    events into 5 KB-aligned JSON Lines records, paces each stream under its quota and
    retries what fails. See README.md for the guarantees.

    ``client``: a boto3 Firehose client; by default one is made from the config (region,
    endpoint) with botocore's own retries off. ``client_factory``: makes the client instead,
    and again in a forked child, which must not share its parent's connections; a plain
    ``client`` cannot be remade, so after a fork the child keeps using it (with a warning).
    ``clock``: monotonic seconds, for tests. ``meter_provider``/``tracer_provider``:
    OpenTelemetry providers (default: the global ones).

    With ``config.spool_dir`` set, events that cannot be delivered are kept on disk, and
    the buffer starts by re-sending what earlier runs left there (see :mod:`.spool`).
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
        # Everything that can fail comes before any thread starts.
        self._client_factory = client_factory
        self._client = self._new_client() if client is None else client
        self._client_is_own = client is None
        self._spool = Spool(config.spool_dir) if config.spool_dir is not None else None
        self._stream_index = {name: i for i, name in enumerate(config.streams)}
        self._keyed = config.partition_key is not None or config.router is not None
        self._max_line = min(config.max_record_bytes, MAX_RECORD_BYTES)
        self._closed = False
        self._replay_done = threading.Event()
        self._claim: Claim | None = None
        self._init_state()
        ref = weakref.ref(self)
        self._telemetry = Telemetry(
            lambda: None if (b := ref()) is None else b.stats(),
            config.streams, meter_provider, tracer_provider,
        )
        # Listed before any thread starts, so that a fork from now on finds this buffer.
        self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)
        _LIVE.add(self)
        replay = pending_files(self._spool.directory) if self._spool is not None else []
        if not replay:
            self._replay_done.set()
        try:
            self._start_threads(replay)
        except BaseException:
            self._stop_started_threads()
            raise

    def _new_client(self) -> FirehoseClient:
        if self._client_factory is not None:
            return self._client_factory()
        return make_client(self._config)

    def _init_state(self) -> None:
        config = self._config
        self._pid = _getpid()
        # Everything holding a lock is made anew here, so that a child forked while another
        # thread held one (possible when the fork skipped Python's hooks) cannot deadlock.
        self._lock = threading.Lock()
        self._failure_log = RateLimitedLog(log, interval=10.0)
        self._full_log = RateLimitedLog(log, interval=10.0)
        self._spool_log = RateLimitedLog(log, interval=10.0)
        self._space = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._wakeup = threading.Event()
        self._shards = [_Shard() for _ in config.streams]
        self._pipeline = Pipeline(config, self._clock())
        self._accepted_bytes = 0
        self._events_put = 0
        self._events_dropped = 0
        self._events_spilled = 0
        self._events_spooled = 0
        self._events_replayed = 0
        self._sticky = 0
        self._sticky_bytes = 0
        self._sticky_events = 0
        self._flush_requested = 0
        self._flush_marked = 0
        #: The flush generation whose failures have been spooled or reported too: what
        #: flush() waits for, so that when it returns, on_failure and the spool are done.
        self._reported_generation = 0
        self._abandon = False
        self._stopped = False
        self._done: deque[tuple[Batch, Outcome]] = deque()
        self._jobs: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._senders: list[threading.Thread] = []
        self._replayer: threading.Thread | None = None

    def _start_threads(self, replay: list[SpoolFile]) -> None:
        self._senders = [
            threading.Thread(target=self._send_loop, name=f"firehose-buffer-sender-{i}",
                             daemon=True)
            for i in range(self._config.concurrency)
        ]
        for t in self._senders:
            t.start()
        self._worker = threading.Thread(
            target=self._run, name="firehose-buffer-worker", daemon=True
        )
        self._worker.start()
        if replay:
            self._replayer = threading.Thread(
                target=self._replay, args=(replay,), name="firehose-buffer-replay", daemon=True
            )
            self._replayer.start()

    def _stop_started_threads(self) -> None:
        """A thread failed to start: stop the others, as if closed at once, and unlist."""
        with self._lock:
            self._closed = True
            self._abandon = True
        self._wakeup.set()
        for _ in self._senders:
            self._jobs.put(None)
        atexit.unregister(self._exit_hook)
        _LIVE.discard(self)
        if self._spool is not None:
            self._spool.close()

    # -- the caller's side ----------------------------------------------------------------

    @property
    def config(self) -> BufferConfig:
        return self._config

    def put(self, event: Event) -> bool:
        """Queue one event; return False only if ``on_full="drop"`` dropped it (or
        ``"spill"`` could not write it to the spool).

        Raises :class:`EventTypeError`/:class:`EventValueError` for bad input (nothing is
        buffered), :class:`BufferFullError` and :class:`BufferClosedError`.
        """
        if type(event) is dict:
            try:
                line = _dumps(event, option=_OPT)
            except TypeError as exc:
                raise EventTypeError(f"event cannot be serialized to JSON: {exc}") from None
        else:
            line = self._encode_other(event)
        size = len(line)
        if size > self._max_line:
            raise EventTooLargeError(
                f"encoded event is {size} bytes; one record holds at most {self._max_line}"
            )
        index = self._route(event) if self._keyed else -1
        # One load from a page the kernel wipes in a forked child: a fork is seen here even
        # when the server forked without running Python's fork hooks (a syscall would cost
        # more than the rest of this method's bookkeeping).
        if not _ARMED[0]:
            _after_fork_in_child()
        config = self._config
        wake = False
        lock = self._lock
        if not lock.acquire(False):
            _acquire_contended(lock)
        try:
            if self._closed:
                raise BufferClosedError("put() after close()")
            full = (self._accepted_bytes - self._pipeline.resolved_bytes + size
                    > config.max_buffer_bytes)
            if full and not self._make_room(size):
                if index < 0:
                    index = self._sticky
            else:
                full = False
                if index < 0:
                    index = self._sticky
                    self._sticky_bytes += size
                    self._sticky_events += 1
                    if (self._sticky_bytes >= config.record_target_bytes
                            or self._sticky_events >= config.max_events_per_record):
                        self._rotate_sticky()
                shard = self._shards[index]
                lines = shard.lines
                if not lines:
                    shard.first = self._clock()
                    wake = True
                lines.append(line)
                nbytes = shard.nbytes = shard.nbytes + size
                self._accepted_bytes += size
                self._events_put += 1
                # A full record's worth is waiting: wake the worker to cut and send it, or it
                # would wait for linger. Only the put that crosses the threshold wakes it: the
                # event stays set until the worker runs, and Event.set() costs more than this.
                level = shard.staged + nbytes
                if level >= config.record_target_bytes > level - size:
                    wake = True
        finally:
            lock.release()

        if full:
            # Outside the lock: disk I/O, and a logging handler may itself put() into a buffer.
            return self._when_full(index, line)
        if wake:
            self._wakeup.set()
        return True

    def _when_full(self, index: int, line: bytes) -> bool:
        """The buffer was full and on_full is "drop" or "spill": count, say so, maybe spill."""
        config = self._config
        spool = self._spool
        if config.on_full == "spill" and spool is not None:
            kept = spool.append(config.streams[index], line, sync=False)
            with self._lock:
                if kept:
                    self._events_put += 1
                    self._events_spilled += 1
                    self._events_spooled += 1
                else:
                    self._events_dropped += 1
            if kept:
                self._full_log.warning("buffer full (max_buffer_bytes=%d): event spilled to %s",
                                       config.max_buffer_bytes, spool.directory)
                return True
            self._full_log.warning("buffer full and the spool failed: event dropped")
            return False
        with self._lock:
            self._events_dropped += 1
        self._full_log.warning("buffer full (max_buffer_bytes=%d): event dropped",
                               config.max_buffer_bytes)
        return False

    def _encode_other(self, event: object) -> bytes:
        if isinstance(event, bytes | bytearray | memoryview):
            data = bytes(event)
            if not data.strip():
                raise EventValueError("bytes event is empty")
            if b"\n" in data:
                raise EventValueError("bytes event contains a newline; one event is one line")
            return data + b"\n"
        if isinstance(event, Mapping):
            try:
                return _dumps(dict(event), option=_OPT)
            except TypeError as exc:
                raise EventTypeError(f"event cannot be serialized to JSON: {exc}") from None
        raise EventTypeError(
            f"event must be a mapping with str keys or bytes, not {type(event).__name__}"
        )

    def _route(self, event: Event) -> int:
        """Stream index for a keyed event, or -1 for keyless (sticky)."""
        config = self._config
        if config.router is not None:
            try:
                choice = config.router(event)
            except Exception as exc:
                raise EventValueError(f"router raised for this event: {exc!r}") from exc
            if isinstance(choice, str):
                if choice not in self._stream_index:
                    raise EventValueError(f"router chose unknown stream {choice!r}")
                return self._stream_index[choice]
            if not isinstance(choice, int) or not 0 <= choice < len(config.streams):
                raise EventValueError(f"router returned {choice!r}, not a stream index or name")
            return choice
        key = config.partition_key
        if isinstance(event, bytes | bytearray | memoryview):
            try:
                event = orjson.loads(event)
            except orjson.JSONDecodeError as exc:
                raise EventValueError(f"bytes event is not JSON: {exc}") from None
        value = event.get(key) if isinstance(event, Mapping) and key is not None else None
        if value is None:
            return -1
        if not isinstance(value, str | bytes):
            value = orjson.dumps(value)
        return stable_index(value, len(config.streams))

    def _make_room(self, size: int) -> bool:
        """Called with the lock held and the buffer full: wait or raise per on_full; False
        for "drop" and "spill", which the caller handles outside the lock."""
        config = self._config
        limit = config.max_buffer_bytes
        if config.on_full in ("drop", "spill"):
            return False
        if config.on_full == "raise":
            raise BufferFullError(f"buffer holds {limit} bytes (max_buffer_bytes)")
        deadline = time.monotonic() + config.max_block_seconds
        self._wakeup.set()
        while self._accepted_bytes - self._pipeline.resolved_bytes + size > limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BufferFullError(
                    f"buffer stayed full for max_block_seconds={config.max_block_seconds}"
                )
            if self._closed:
                raise BufferClosedError("buffer closed while put() waited for room")
            self._space.wait(remaining)
        return True

    def _rotate_sticky(self) -> None:
        now = self._clock()
        headroom = [
            s.limiter.affordable_bytes(now) - s.backlog_bytes - shard.nbytes
            for s, shard in zip(self._pipeline.streams, self._shards, strict=True)
        ]
        self._sticky = roomiest(self._sticky, headroom)
        self._sticky_bytes = 0
        self._sticky_events = 0

    def flush(self, timeout: float | None = 10.0) -> FlushResult:
        """Send everything put before this call, ignoring linger; wait for every outcome.

        Returns a :class:`FlushResult`, truthy when all of it was delivered within
        ``timeout``. From the ``on_failure`` callback (the worker thread) it only asks for
        the flush and reports everything pending, since the worker cannot wait for itself.
        """
        if not _ARMED[0]:
            _after_fork_in_child()
        before = self.stats()
        generation = self._request_flush()
        if generation is None:
            with self._lock:
                done = self._pipeline.idle and not any(s.lines for s in self._shards)
            return _covered(before, self.stats(), done)
        if threading.current_thread() is self._worker:
            return FlushResult(0, 0, before.events_buffered)
        done = self._wait_flushed(generation, timeout)
        return _covered(before, self.stats(), done)

    def _request_flush(self) -> int | None:
        with self._lock:
            if self._stopped:
                return None
            self._flush_requested += 1
            generation = self._flush_requested
        self._wakeup.set()
        return generation

    def _wait_flushed(self, generation: int, timeout: float | None) -> bool:
        with self._lock:
            return self._progress.wait_for(
                lambda: self._reported_generation >= generation or self._stopped,
                timeout,
            ) and self._reported_generation >= generation

    def close(self, timeout: float | None = 10.0) -> FlushResult:
        """Flush, then stop the threads; idempotent. put() raises BufferClosedError after.

        Returns within ``timeout`` (``None``: wait for every outcome). Events not delivered
        by then are failed (reason ``"closed_before_delivery"``): written to the spool when
        there is one, else handed to ``on_failure``. The :class:`FlushResult` is truthy
        when everything was delivered.
        """
        if not _ARMED[0]:
            _after_fork_in_child()
        before = self.stats()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._lock:
            first = not self._closed
            self._closed = True
            self._space.notify_all()
        if first:
            atexit.unregister(self._exit_hook)
            _LIVE.discard(self)
        if threading.current_thread() is self._worker:
            self._wakeup.set()
            return FlushResult(0, 0, before.events_buffered)
        flush_timeout = None if timeout is None else max(
            0.0, timeout - min(_ABANDON_GRACE_SECONDS, timeout * _ABANDON_GRACE_FRACTION)
        )
        if self.flush(flush_timeout).pending:
            with self._lock:
                self._abandon = True
            self._wakeup.set()
        for thread in (self._worker, self._replayer):
            if thread is not None and thread.is_alive():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for _ in self._senders:
            self._jobs.put(None)
        worker = self._worker
        if self._spool is not None and (worker is None or not worker.is_alive()):
            self._spool.close()
        after = self.stats()
        self._telemetry.closed(after)
        return _covered(before, after, after.events_buffered == 0)

    def __enter__(self) -> FirehoseBuffer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- asyncio: flush and close on a thread, so the event loop never waits ----------------

    async def aflush(self, timeout: float | None = 10.0) -> FlushResult:
        """:meth:`flush` for async code: awaits it on a thread; the loop keeps running."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = 10.0) -> FlushResult:
        """:meth:`close` for async code (an ASGI lifespan's shutdown, say): awaits it on a
        thread; the loop keeps serving while the buffer drains."""
        return await asyncio.to_thread(self.close, timeout)

    async def __aenter__(self) -> FirehoseBuffer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def wait_for_replay(self, timeout: float | None = None) -> bool:
        """Wait until the spool files found at start have each been re-sent (or handed back
        to the spool); True if so within ``timeout``. True at once without a spool."""
        return self._replay_done.wait(timeout)

    def stats(self) -> BufferStats:
        """A consistent snapshot of the counters."""
        if not _ARMED[0]:
            _after_fork_in_child()
        with self._lock:
            p = self._pipeline
            c = p.counters
            pending_lines = sum(len(s.lines) for s in self._shards)
            failures = dict(c.failures)
            if self._events_spilled:
                failures[SPILLED_WHEN_FULL] = (
                    failures.get(SPILLED_WHEN_FULL, 0) + self._events_spilled
                )
            return BufferStats(
                events_put=self._events_put,
                events_delivered=c.events_delivered,
                events_failed=c.events_failed + self._events_spilled,
                events_dropped=self._events_dropped,
                events_buffered=pending_lines + p.staged_events + p.outstanding_events,
                bytes_buffered=self._accepted_bytes - p.resolved_bytes,
                records_sent=c.records_sent,
                bytes_sent=c.bytes_sent,
                billed_bytes=c.billed_bytes,
                requests_sent=c.requests_sent,
                throttled_records=c.throttled_records,
                throttled_requests=c.throttled_requests,
                retried_records=c.retried_records,
                possible_duplicates=c.possible_duplicates,
                last_error=p.last_error,
                failures_by_reason=failures,
                streams=tuple(
                    StreamStats(
                        name=s.name,
                        allowed_share=s.limiter.share,
                        allowed_bytes_per_second=s.limiter.bytes_per_second,
                        backlog_bytes=s.backlog_bytes + shard.nbytes,
                        records_sent=s.records_sent,
                        bytes_sent=s.bytes_sent,
                        throttled_records=s.throttled_records,
                    )
                    for s, shard in zip(p.streams, self._shards, strict=True)
                ),
                events_spooled=self._events_spooled,
                events_replayed=self._events_replayed,
            )

    # -- the worker's side ----------------------------------------------------------------

    def _run(self) -> None:
        timeout: float | None = None
        try:
            while True:
                self._wakeup.wait(timeout)
                self._wakeup.clear()
                batches, failures, stop, timeout, generation = self._step()
                for batch in batches:
                    self._jobs.put(batch)
                if failures:
                    self._report(failures)
                if generation != self._reported_generation:
                    with self._lock:
                        self._reported_generation = generation
                        self._progress.notify_all()
                if stop:
                    return
        except BaseException:
            log.exception("firehose_buffer worker crashed; events in memory are failed")
            with self._lock:
                failures = self._pipeline.abandon("worker_crashed")
            self._report(failures)
            raise
        finally:
            with self._lock:
                self._stopped = True
                self._progress.notify_all()
                self._space.notify_all()

    def _step(self) -> tuple[list[Batch], list[Failure], bool, float | None, int]:
        """One look at everything, under the lock: outcomes in, lines packed, batches out."""
        p = self._pipeline
        with self._lock:
            now = self._clock()
            resolved_before = p.resolved_bytes
            failures: list[Failure] = []
            while self._done:
                batch, outcome = self._done.popleft()
                failures.extend(p.complete(batch, outcome, now))
            for i, shard in enumerate(self._shards):
                if shard.lines:
                    p.stage(i, shard.lines, shard.nbytes, shard.first)
                    shard.lines = []
                    shard.nbytes = 0
            flush_wanted = self._flush_requested > self._flush_marked
            if not self._keyed:
                p.settle_keyless(self._sticky)
            p.pack(now, everything=flush_wanted or self._closed)
            if flush_wanted:
                self._flush_marked = self._flush_requested
                p.mark_flush(self._flush_marked)
            batches: list[Batch] = []
            if self._abandon:
                failures.extend(p.abandon(ABANDONED_AT_CLOSE))
            else:
                batches, expired = p.dispatch(now)
                failures.extend(expired)
            if p.resolved_bytes != resolved_before:
                self._space.notify_all()
            generation = p.flushed_generation
            stop = self._closed and p.idle
            for shard, stream in zip(self._shards, p.streams, strict=True):
                shard.staged = stream.staged_bytes
            # Shards are empty here; the first put into an empty shard wakes the worker, which
            # is how lines get a put time close enough for the packer to choose a cheap cut.
            deadline = p.next_deadline(now)
        timeout = None if deadline is None else max(0.0, deadline - self._clock())
        return batches, failures, stop, timeout, generation

    def _send_loop(self) -> None:
        jobs = self._jobs
        while True:
            batch = jobs.get()
            if batch is None:
                return
            outcome = self._telemetry.call(
                batch.name, len(batch.records), batch.nbytes,
                functools.partial(put_record_batch, self._client, batch.name, batch.payloads()),
            )
            self._done.append((batch, outcome))
            self._wakeup.set()

    def _report(self, failures: list[Failure]) -> None:
        """Keep failed events in the spool if there is one; hand the rest to on_failure."""
        callback = self._config.on_failure
        spool = self._spool
        for failure in failures:
            if spool is not None and failure.events:
                data = b"\n".join(failure.events) + b"\n"
                if spool.append(failure.stream, data):
                    with self._lock:
                        self._events_spooled += len(failure.events)
                    self._spool_log.warning(
                        "%d events for %s could not be delivered (%s): kept in the spool %s",
                        len(failure.events), failure.stream, failure.reason, spool.directory,
                    )
                    continue
            if callback is None:
                self._failure_log.warning(
                    "%d events for %s failed (%s); set on_failure or spool_dir to keep them",
                    len(failure.events), failure.stream, failure.reason,
                )
                continue
            try:
                callback(failure.events, failure.reason)
            except Exception:
                log.exception("on_failure callback raised; the worker carries on")

    # -- replay of the spool --------------------------------------------------------------

    def _replay(self, files: list[SpoolFile]) -> None:
        """Re-send spool files left by earlier runs, one at a time, alongside new events.

        A file is deleted once every event in it has an outcome that keeps it: delivered, or
        failed again and written to a new spool file. A crash in between leaves it in place
        (sent again by the next run: at least once, never lost).
        """
        try:
            for spool_file in files:
                if self._closed:
                    break
                taken = claim(spool_file)
                if taken is None:
                    continue  # another process has it, or it is gone
                self._claim = taken
                try:
                    self._replay_file(taken)
                finally:
                    self._claim = None
                    taken.release()
        except Exception:
            log.exception("replaying the spool failed; its files stay for the next run")
        finally:
            self._replay_done.set()

    def _replay_file(self, taken: Claim) -> None:
        spool = self._spool
        assert spool is not None
        errors_before = spool.errors
        chunks = taken.chunks()
        replayed = 0
        rest: list[bytes] = []
        for chunk in chunks:
            fed = self._feed(taken.stream, chunk)
            replayed += fed
            if fed < len(chunk):
                # Closed while replaying: what was not fed moves to this run's spool file.
                rest = chunk[fed:]
                break
        moved = True
        if rest:
            moved = spool.append(taken.stream, b"".join(rest))
            for chunk in chunks:
                moved = spool.append(taken.stream, b"".join(chunk)) and moved
        if taken.torn_bytes:
            log.warning("spool file %s ends with %d bytes of a line cut short by a crash; "
                        "skipped", taken.path, taken.torn_bytes)
        generation = self._request_flush()
        if generation is not None:
            with self._lock:
                self._progress.wait_for(
                    lambda: self._reported_generation >= generation or self._stopped
                )
        with self._lock:
            accounted = self._reported_generation >= (generation or 0) or (
                self._stopped and self._pipeline.idle
                and not any(s.lines for s in self._shards)
            )
        if accounted and moved and spool.errors == errors_before:
            taken.remove()
            log.info("replayed %d events from spool file %s", replayed, taken.path)
        else:
            log.warning("spool file %s kept: not every event in it reached an outcome "
                        "(it will be sent again; some events may be duplicated)", taken.path)

    def _feed(self, stream: str, lines: list[bytes]) -> int:
        """Hand replayed lines to the worker, waiting for room as long as it takes; returns
        how many were taken before the buffer closed."""
        config = self._config
        known = self._stream_index.get(stream)
        indices = [known if known is not None else self._replay_route(line) for line in lines]
        limit = config.max_buffer_bytes
        fed = 0
        oversized: list[bytes] = []
        wake = False
        with self._lock:
            for line, index in zip(lines, indices, strict=True):
                size = len(line)
                if size > self._max_line:
                    oversized.append(line[:-1])
                    fed += 1
                    continue
                while self._accepted_bytes - self._pipeline.resolved_bytes + size > limit:
                    if self._closed:
                        break
                    self._wakeup.set()
                    self._space.wait(_REPLAY_POLL_SECONDS)
                if self._closed:
                    break
                i = self._sticky if index < 0 else index
                shard = self._shards[i]
                if not shard.lines:
                    shard.first = self._clock()
                    wake = True
                shard.lines.append(line)
                shard.nbytes += size
                self._accepted_bytes += size
                self._events_put += 1
                self._events_replayed += 1
                fed += 1
                if shard.nbytes >= config.record_target_bytes:
                    wake = True
        if wake:
            self._wakeup.set()
        if oversized:
            # Too large for this configuration's records: back to the spool, never dropped.
            with self._lock:
                self._events_put += len(oversized)
                self._events_replayed += len(oversized)
                self._pipeline.counters.events_failed += len(oversized)
                self._pipeline.counters.failures["event_too_large"] += len(oversized)
            self._report([Failure(stream, oversized, "event_too_large")])
        return fed

    def _replay_route(self, line: bytes) -> int:
        """A spooled event for a stream this buffer does not have: route it as put() would."""
        if not self._keyed:
            return -1
        try:
            return self._route(line[:-1])
        except EventValueError:
            return -1

    # -- fork -----------------------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a forked child: start empty with fresh locks and threads. The parent's events
        stay the parent's to send; the client is not shared, since its sockets are."""
        if self._pid == _getpid():
            return
        self._init_state()
        self._replay_done = threading.Event()
        self._replay_done.set()  # the parent replays its spool; a child does not
        if self._claim is not None:
            self._claim.release()  # our copy only: the parent keeps its lock
            self._claim = None
        if self._spool is not None:
            self._spool.after_fork()
        if self._client_is_own or self._client_factory is not None:
            self._client = self._new_client()
        else:
            log.warning("FirehoseBuffer in a forked child keeps the client it was given, "
                        "whose connections the parent shares; pass client_factory instead")
        if not self._closed:
            self._start_threads([])


def _covered(before: BufferStats, after: BufferStats, done: bool) -> FlushResult:
    """The outcomes of the events buffered at ``before``, read off two snapshots.

    An approximation: events put meanwhile may resolve first and be counted instead.
    """
    covered = before.events_buffered
    failed = min(covered, after.events_failed - before.events_failed)
    if done:
        return FlushResult(covered - failed, failed, 0)
    delivered = min(covered - failed, after.events_delivered - before.events_delivered)
    return FlushResult(delivered, failed, covered - failed - delivered)


def _close_at_exit(ref: weakref.ReferenceType[FirehoseBuffer]) -> None:
    buffer = ref()
    if buffer is not None and buffer._pid == _getpid():
        buffer.close(buffer.config.exit_timeout_seconds)


__all__ = ["FirehoseBuffer"]

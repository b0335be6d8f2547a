"""The public facade: put, flush, close, stats; the worker thread and the sender threads."""

from __future__ import annotations

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
from .limits import MAX_RECORD_BYTES
from .logutil import RateLimitedLog
from .pipeline import Batch, Failure, Pipeline
from .routing import roomiest, stable_index
from .sender import FirehoseClient, Outcome, put_record_batch
from .stats import BufferStats, StreamStats
from .telemetry import Telemetry

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

log = logging.getLogger("firehose_buffer")

_dumps = orjson.dumps
_OPT = orjson.OPT_APPEND_NEWLINE
_getpid = os.getpid
#: While lines wait in memory, the worker looks at them this often (as a fraction of linger),
#: so that the packer knows their age well enough to choose a cheap cut.
_DRAIN_FRACTION = 0.125
#: How long close() waits for the worker after giving up on delivery (it is failing events).
_ABANDON_GRACE_SECONDS = 1.0
ABANDONED_AT_CLOSE = "closed_before_delivery"


class _Shard:
    """Lines put for one stream since the worker last took them."""

    __slots__ = ("first", "lines", "nbytes")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.nbytes = 0
        self.first = 0.0


class FirehoseBuffer:
    """Buffers events in memory and ships them to Firehose in the background.

    ``put()`` serializes on the caller's thread and returns at once; one worker thread packs
    events into 5 KB-aligned JSON Lines records, paces each stream under its quota and
    retries what fails. See README.md for the guarantees.

    ``client``: a boto3 Firehose client; by default one is made from the config (region,
    endpoint) with botocore's own retries off. ``clock``: monotonic seconds, for tests.
    ``meter_provider``/``tracer_provider``: OpenTelemetry providers (default: the global ones).
    """

    def __init__(
        self,
        config: BufferConfig,
        client: FirehoseClient | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        if not isinstance(config, BufferConfig):
            raise ConfigurationError("config must be a BufferConfig")
        self._config = config
        self._clock = clock
        # Everything that can fail comes before any thread starts.
        self._client = client if client is not None else make_client(config)
        self._client_is_own = client is None
        self._stream_index = {name: i for i, name in enumerate(config.streams)}
        self._keyed = config.partition_key is not None or config.router is not None
        self._max_line = min(config.max_record_bytes, MAX_RECORD_BYTES)
        self._failure_log = RateLimitedLog(log, interval=10.0)
        self._full_log = RateLimitedLog(log, interval=10.0)
        self._closed = False
        self._init_state()
        ref = weakref.ref(self)
        self._telemetry = Telemetry(
            lambda: None if (b := ref()) is None else b.stats(),
            config.streams, meter_provider, tracer_provider,
        )
        self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)
        _LIVE.add(self)
        self._start_threads()

    def _init_state(self) -> None:
        config = self._config
        self._pid = _getpid()
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._wakeup = threading.Event()
        self._shards = [_Shard() for _ in config.streams]
        self._pipeline = Pipeline(config, self._clock())
        self._accepted_bytes = 0
        self._events_put = 0
        self._events_dropped = 0
        self._sticky = 0
        self._sticky_bytes = 0
        self._sticky_events = 0
        self._flush_requested = 0
        self._flush_marked = 0
        self._abandon = False
        self._stopped = False
        self._done: deque[tuple[Batch, Outcome]] = deque()
        self._jobs: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._senders: list[threading.Thread] = []

    def _start_threads(self) -> None:
        self._worker = threading.Thread(
            target=self._run, name="firehose-buffer-worker", daemon=True
        )
        self._senders = [
            threading.Thread(target=self._send_loop, name=f"firehose-buffer-sender-{i}",
                             daemon=True)
            for i in range(self._config.concurrency)
        ]
        for t in self._senders:
            t.start()
        self._worker.start()

    # -- the caller's side ----------------------------------------------------------------

    @property
    def config(self) -> BufferConfig:
        return self._config

    def put(self, event: Event) -> bool:
        """Queue one event; return False only if ``on_full="drop"`` dropped it.

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
        if self._pid != _getpid():
            self._after_fork()
        config = self._config
        wake = False
        with self._lock:
            if self._closed:
                raise BufferClosedError("put() after close()")
            full = (self._accepted_bytes - self._pipeline.resolved_bytes + size
                    > config.max_buffer_bytes)
            if full and not self._make_room(size):
                self._events_dropped += 1
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
                if not shard.lines:
                    shard.first = self._clock()
                    wake = True
                shard.lines.append(line)
                shard.nbytes += size
                self._accepted_bytes += size
                self._events_put += 1
                if shard.nbytes >= config.record_target_bytes:
                    wake = True
        if full:
            # Logged outside the lock: a logging handler may itself put() into a buffer.
            self._full_log.warning("buffer full (max_buffer_bytes=%d): event dropped",
                                   config.max_buffer_bytes)
            return False
        if wake:
            self._wakeup.set()
        return True

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
        """Called with the lock held and the buffer full: wait, drop or raise per on_full."""
        config = self._config
        limit = config.max_buffer_bytes
        if config.on_full == "drop":
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

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Send everything put before this call, ignoring linger; wait for every outcome.

        Returns True when all of it was delivered or failed (see ``on_failure``) within
        ``timeout``, False on timeout. From the ``on_failure`` callback (the worker thread) it
        only asks for the flush and returns False, since the worker cannot wait for itself.
        """
        with self._lock:
            if self._stopped:
                return self._pipeline.idle and not any(s.lines for s in self._shards)
            self._flush_requested += 1
            generation = self._flush_requested
        self._wakeup.set()
        if threading.current_thread() is self._worker:
            return False
        with self._lock:
            return self._progress.wait_for(
                lambda: self._pipeline.flushed_generation >= generation or self._stopped,
                timeout,
            ) and self._pipeline.flushed_generation >= generation

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush, then stop the threads; idempotent. put() raises BufferClosedError after.

        Events not delivered within ``timeout`` are failed (reason
        ``"closed_before_delivery"``) and handed to ``on_failure``. Returns True when
        everything was delivered or had failed for another reason before the deadline.
        """
        with self._lock:
            first = not self._closed
            self._closed = True
            self._space.notify_all()
        if first:
            atexit.unregister(self._exit_hook)
            _LIVE.discard(self)
        if threading.current_thread() is self._worker:
            self._wakeup.set()
            return False
        delivered = self.flush(timeout)
        if not delivered:
            with self._lock:
                self._abandon = True
            self._wakeup.set()
        worker = self._worker
        if worker is not None and worker.is_alive():
            worker.join(_ABANDON_GRACE_SECONDS if not delivered else timeout)
        for _ in self._senders:
            self._jobs.put(None)
        return delivered

    def __enter__(self) -> FirehoseBuffer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def stats(self) -> BufferStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            p = self._pipeline
            c = p.counters
            pending_lines = sum(len(s.lines) for s in self._shards)
            return BufferStats(
                events_put=self._events_put,
                events_delivered=c.events_delivered,
                events_failed=c.events_failed,
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
                failures_by_reason=dict(c.failures),
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
            )

    # -- the worker's side ----------------------------------------------------------------

    def _run(self) -> None:
        timeout: float | None = None
        try:
            while True:
                self._wakeup.wait(timeout)
                self._wakeup.clear()
                batches, failures, stop, timeout = self._step()
                for batch in batches:
                    self._jobs.put(batch)
                if failures:
                    self._report(failures)
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

    def _step(self) -> tuple[list[Batch], list[Failure], bool, float | None]:
        """One look at everything, under the lock: outcomes in, lines packed, batches out."""
        p = self._pipeline
        with self._lock:
            now = self._clock()
            resolved_before = p.resolved_bytes
            generation_before = p.flushed_generation
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
            if p.flushed_generation != generation_before:
                self._progress.notify_all()
            stop = self._closed and p.idle
            deadline = p.next_deadline(now)
            if any(shard.lines for shard in self._shards):
                soon = now + self._config.linger_seconds * _DRAIN_FRACTION
                deadline = soon if deadline is None else min(deadline, soon)
        timeout = None if deadline is None else max(0.0, deadline - self._clock())
        return batches, failures, stop, timeout

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
        callback = self._config.on_failure
        for failure in failures:
            if callback is None:
                self._failure_log.warning(
                    "%d events for %s failed (%s); set on_failure to keep them",
                    len(failure.events), failure.stream, failure.reason,
                )
                continue
            try:
                callback(failure.events, failure.reason)
            except Exception:
                log.exception("on_failure callback raised; the worker carries on")

    # -- fork -----------------------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a forked child: start empty with fresh locks and threads. The parent's events
        stay the parent's to send; the client is not shared, since its sockets are."""
        if self._pid == _getpid():
            return
        self._init_state()
        if self._client_is_own:
            self._client = make_client(self._config)
        if not self._closed:
            self._start_threads()


def _close_at_exit(ref: weakref.ReferenceType[FirehoseBuffer]) -> None:
    buffer = ref()
    if buffer is not None and buffer._pid == _getpid():
        buffer.close(buffer.config.exit_timeout_seconds)


_LIVE: weakref.WeakSet[FirehoseBuffer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for buffer in list(_LIVE):
        buffer._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["FirehoseBuffer"]

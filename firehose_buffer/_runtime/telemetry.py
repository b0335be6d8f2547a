"""OpenTelemetry metrics and spans (opentelemetry-api only; no-op without an SDK).

Counters and gauges are observable: one ``FirehoseBuffer.stats()`` snapshot per buffer per
collection feeds them all, so ``put()`` pays nothing for them and they agree with
``stats()`` (and with each other) by construction. Only what ``stats()`` cannot tell is
recorded as it happens: one span and one latency measurement per PutRecordBatch call (never
per event).

Instruments are created once per meter provider and shared by every buffer using it: the
SDK keeps only the first callback of a repeated instrument name, so a second buffer (say, a
logging handler's) would otherwise be invisible. Each callback sums over the live buffers;
a buffer that is gone leaves its last observed counts behind so counters never go down.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ..stats import BufferStats
from ..transport import Outcome

SCOPE = "firehose_buffer"
#: The delivery stream a measurement or span is about.
STREAM = "firehose.stream"
#: Why events failed or a call errored (``ttl_expired``, ``ResourceNotFoundException``...).
ERROR_TYPE = "error.type"
SPAN_NAME = "Firehose.PutRecordBatch"
#: Seconds; PutRecordBatch usually takes tens of milliseconds, a throttled or slow one seconds.
#: A collection's snapshots are reused by its other instruments for this long at most.
_SNAPSHOT_TTL = 1.0
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)

Attrs = tuple[tuple[str, str], ...]
Extract = Callable[[BufferStats], Iterable[tuple[Attrs, float]]]


def _version() -> str:
    from .. import __version__  # noqa: PLC0415  (the package imports this module first)

    return __version__


def _total(field: str) -> Extract:
    def extract(s: BufferStats) -> Iterator[tuple[Attrs, float]]:
        value = getattr(s, field, None)
        if value is not None:
            yield (), value

    return extract


def _per_stream(field: str) -> Extract:
    def extract(s: BufferStats) -> Iterator[tuple[Attrs, float]]:
        for st in s.streams:
            yield ((STREAM, st.name),), getattr(st, field)

    return extract


def _failures(s: BufferStats) -> Iterator[tuple[Attrs, float]]:
    for reason, count in s.failures_by_reason.items():
        yield ((ERROR_TYPE, reason),), count


@dataclass(frozen=True, slots=True)
class _Spec:
    """One observable instrument: its name, unit and description, how to read its value(s)
    from a stats snapshot, its kind, and how values from several buffers combine."""

    name: str
    unit: str
    description: str
    extract: Extract
    kind: str  # "counter" (monotonic), "updown" (additive level) or "gauge"
    combine: Callable[[Iterable[float]], float] = sum


#: Every observable instrument. Buffered amounts are UpDownCounters rather than gauges
#: because they add up across buffers and processes (OpenTelemetry's rule for levels such as
#: queue sizes); the allowed rate and share are genuine gauges.
SPECS: tuple[_Spec, ...] = (
    _Spec("firehose_buffer.events.put", "{event}", "Events accepted by put().",
          _total("events_put"), "counter"),
    _Spec("firehose_buffer.events.delivered", "{event}",
          "Events in records Firehose acknowledged.", _total("events_delivered"), "counter"),
    _Spec("firehose_buffer.events.failed", "{event}",
          "Events given up on, by reason (error.type).", _failures, "counter"),
    _Spec("firehose_buffer.events.dropped", "{event}",
          "Events refused because the buffer was full (on_full='drop').",
          _total("events_dropped"), "counter"),
    _Spec("firehose_buffer.events.spooled", "{event}", "Events written to the local spool.",
          _total("events_spooled"), "counter"),
    _Spec("firehose_buffer.events.replayed", "{event}",
          "Events read back from the spool and re-sent (also counted as put).",
          _total("events_replayed"), "counter"),
    _Spec("firehose_buffer.events.possibly_duplicated", "{event}",
          "Events resent after an outcome that could not be known (5xx, reset, timeout).",
          _total("possible_duplicates"), "counter"),
    _Spec("firehose_buffer.records.sent", "{record}", "Records Firehose acknowledged.",
          _per_stream("records_sent"), "counter"),
    _Spec("firehose_buffer.records.throttled", "{record}",
          "Records Firehose refused with a slow-down code.",
          _per_stream("throttled_records"), "counter"),
    _Spec("firehose_buffer.records.retried", "{record}",
          "Record sends that were retried.", _total("retried_records"), "counter"),
    _Spec("firehose_buffer.requests.sent", "{request}", "PutRecordBatch calls completed.",
          _total("requests_sent"), "counter"),
    _Spec("firehose_buffer.requests.throttled", "{request}",
          "PutRecordBatch calls refused whole with a slow-down error.",
          _total("throttled_requests"), "counter"),
    _Spec("firehose_buffer.data.sent", "By",
          "Bytes of acknowledged records as sent (compressed, with compression).",
          _per_stream("bytes_sent"), "counter"),
    _Spec("firehose_buffer.data.raw", "By",
          "JSON Lines bytes in acknowledged records (before compression).",
          _total("raw_bytes_sent"), "counter"),
    _Spec("firehose_buffer.data.billed", "By",
          "Acknowledged bytes as billed (each record rounded up to 5 KB).",
          _total("billed_bytes"), "counter"),
    _Spec("firehose_buffer.events.buffered", "{event}",
          "Events accepted and not yet delivered or failed.", _total("events_buffered"),
          "updown"),
    _Spec("firehose_buffer.data.buffered", "By", "Bytes held against max_buffer_bytes.",
          _total("bytes_buffered"), "updown"),
    _Spec("firehose_buffer.stream.backlog", "By",
          "Bytes waiting for a stream (not in flight).", _per_stream("backlog_bytes"), "updown"),
    _Spec("firehose_buffer.stream.allowed_rate", "By/s",
          "Bytes per second the adaptive limiter currently allows on a stream.",
          _per_stream("allowed_bytes_per_second"), "gauge"),
    _Spec("firehose_buffer.stream.allowed_share", "1",
          "Fraction of the configured quota the adaptive limiter currently allows.",
          _per_stream("allowed_share"), "gauge", min),
)


class _Source:
    """One buffer as the instruments see it: how to read it, and what was read last."""

    __slots__ = ("last", "stats")

    def __init__(self, stats: Callable[[], BufferStats | None]) -> None:
        self.stats = stats
        #: The last snapshot read, so that a buffer that is gone still counts.
        self.last: BufferStats | None = None

    def snapshot(self) -> tuple[bool, BufferStats | None]:
        """(still alive, what to report now)."""
        try:
            snapshot = self.stats()
        except Exception:
            # A metrics reader must not break on a buffer in a bad state: report the last.
            return True, self.last
        if snapshot is None:
            return False, None
        self.last = snapshot
        return True, snapshot


class _Instruments:
    """The instruments of one meter provider and the buffers (sources) they observe.

    One collection reads each buffer's ``stats()`` once: the first instrument's callback
    (the SDK calls them in the order they were created) takes the snapshots, the others
    read them. A snapshot older than ``_SNAPSHOT_TTL`` is taken again, so a reader that
    skips the first instrument still sees fresh values.
    """

    def __init__(self, meter: metrics.Meter) -> None:
        self._lock = threading.Lock()
        self._sources: list[_Source] = []
        #: Sources whose Telemetry was garbage-collected. A deque because a finalizer may
        #: append at any moment, even while this thread holds ``_lock``.
        self.dead: deque[_Source] = deque()
        #: Counts of buffers that are gone, per counter and attribute set.
        self._retired: dict[str, Counter[Attrs]] = {s.name: Counter() for s in SPECS}
        self._taken: tuple[float, list[BufferStats]] = (-_SNAPSHOT_TTL, [])
        for first, spec in zip([True] + [False] * (len(SPECS) - 1), SPECS, strict=True):
            create = {
                "counter": meter.create_observable_counter,
                "updown": meter.create_observable_up_down_counter,
                "gauge": meter.create_observable_gauge,
            }[spec.kind]
            create(spec.name, callbacks=[self._callback(spec, refresh=first)], unit=spec.unit,
                   description=spec.description)
        self.duration = meter.create_histogram(
            "firehose_buffer.put_record_batch.duration", unit="s",
            description="Duration of PutRecordBatch calls.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def add(self, source: _Source) -> None:
        self._retire(self._drain_dead())
        with self._lock:
            self._sources.append(source)

    def _drain_dead(self) -> list[_Source]:
        gone: list[_Source] = []
        while self.dead:
            gone.append(self.dead.popleft())
        return gone

    def _snapshots(self, *, refresh: bool) -> list[BufferStats]:
        now = time.monotonic()
        taken_at, snapshots = self._taken
        if not refresh and now - taken_at < _SNAPSHOT_TTL:
            return snapshots
        gone = self._drain_dead()
        with self._lock:
            sources = [s for s in self._sources if s not in gone]
        live: list[BufferStats] = []
        for source in sources:
            # Outside our lock: stats() takes the buffer's lock.
            alive, snapshot = source.snapshot()
            if not alive:
                gone.append(source)
            elif snapshot is not None:
                live.append(snapshot)
        self._retire(gone)
        self._taken = (now, live)
        return live

    def _retire(self, gone: list[_Source]) -> None:
        if not gone:
            return
        with self._lock:
            for source in gone:
                if source not in self._sources:
                    continue  # another reader's collection retired it first
                self._sources.remove(source)
                last = source.last
                if last is None:
                    continue
                for spec in SPECS:
                    if spec.kind == "counter":
                        self._retired[spec.name].update(dict(spec.extract(last)))

    def _callback(
        self, spec: _Spec, *, refresh: bool,
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            values: dict[Attrs, list[float]] = {}
            for snapshot in self._snapshots(refresh=refresh):
                for attrs, value in spec.extract(snapshot):
                    values.setdefault(attrs, []).append(value)
            if spec.kind == "counter":
                with self._lock:
                    retired = dict(self._retired[spec.name])
                for attrs, value in retired.items():
                    values.setdefault(attrs, []).append(value)
            return [Observation(spec.combine(v), dict(attrs)) for attrs, v in values.items()]

        return observe


_REGISTRY_LOCK = threading.Lock()
_GLOBAL: list[_Instruments] = []
_BY_PROVIDER: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()


def _instruments(meter_provider: Any) -> _Instruments:
    with _REGISTRY_LOCK:
        if meter_provider is None:
            # One set on the global provider (a proxy until an SDK is installed, which then
            # takes the instruments over), whichever provider is global later.
            if not _GLOBAL:
                _GLOBAL.append(_Instruments(metrics.get_meter(SCOPE, _version())))
            return _GLOBAL[0]
        found = _BY_PROVIDER.get(meter_provider)
        if found is None:
            found = _Instruments(meter_provider.get_meter(SCOPE, _version()))
            _BY_PROVIDER[meter_provider] = found
        return found


class Telemetry:
    """Instruments for one buffer. ``stats`` returns the buffer's current snapshot, or
    ``None`` once the buffer is gone."""

    def __init__(
        self,
        stats: Callable[[], BufferStats | None],
        streams: Sequence[str],
        meter_provider: Any = None,
        tracer_provider: Any = None,
    ) -> None:
        self._streams = tuple(streams)
        self._attrs = {name: {STREAM: name} for name in self._streams}
        self._tracer = trace.get_tracer(SCOPE, _version(), tracer_provider)
        instruments = _instruments(meter_provider)
        self._duration = instruments.duration
        source = self._source = _Source(stats)
        instruments.add(source)
        # Only the buffer holds this object, so it is collected with the buffer.
        weakref.finalize(self, instruments.dead.append, source)

    def closed(self, final: BufferStats) -> None:
        """The buffer closed: report these counts even if it is collected before a reader
        next looks (otherwise its last minutes would go uncounted)."""
        self._source.last = final

    def call(self, stream: str, records: int, nbytes: int, send: Callable[[], Outcome]) -> Outcome:
        """Run one PutRecordBatch (``send``) inside a span, timing it."""
        attrs: dict[str, Any] = self._attrs.get(stream) or {STREAM: stream}
        span_attrs: dict[str, AttributeValue] = {
            STREAM: stream,
            "rpc.system": "aws-api",
            "rpc.service": "Firehose",
            "rpc.method": "PutRecordBatch",
            "firehose.batch.records": records,
            "firehose.batch.bytes": nbytes,
        }
        with self._tracer.start_as_current_span(
            SPAN_NAME, kind=SpanKind.CLIENT, attributes=span_attrs,
            record_exception=True, set_status_on_exception=True,
        ) as span:
            start = time.perf_counter()
            outcome = send()
            elapsed = time.perf_counter() - start
            if outcome.error is not None:
                attrs = {**attrs, ERROR_TYPE: outcome.error}
                span.set_attribute(ERROR_TYPE, outcome.error)
                span.set_attribute("firehose.batch.failed_records", records)
                span.set_status(Status(StatusCode.ERROR, outcome.error))
            elif outcome.codes is not None and span.is_recording():
                failed = Counter(code for code in outcome.codes if code is not None)
                span.set_attribute("firehose.batch.failed_records", failed.total())
                if failed:
                    # The call worked; some records will be retried. Not a span error.
                    span.set_attribute(ERROR_TYPE, failed.most_common(1)[0][0])
            self._duration.record(elapsed, attrs)
        return outcome

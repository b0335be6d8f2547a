"""OpenTelemetry metrics and spans read through the SDK agree with ``FirehoseBuffer.stats()``.

Real HTTP against the local emulator, with scripted partial failures and whole-call errors,
so every counter has something to count.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from firehose_buffer import BufferConfig, BufferStats, FirehoseBuffer
from firehose_buffer._runtime.telemetry import SPAN_NAME, SPECS, STREAM, Telemetry
from firehose_buffer.emulator import Fault, LocalFirehose

pytestmark = pytest.mark.slow

STREAMS = ("tel-a", "tel-b")
Points = dict[str, dict[tuple[tuple[str, Any], ...], float]]


@dataclass
class Otel:
    reader: InMemoryMetricReader
    meters: MeterProvider
    spans: InMemorySpanExporter
    tracers: TracerProvider

    def metrics(self) -> tuple[Points, dict[str, list[HistogramDataPoint]], dict[str, str]]:
        """Number points by metric and attribute set, histogram points, and units."""
        points: Points = {}
        histograms: dict[str, list[HistogramDataPoint]] = {}
        units: dict[str, str] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data is not None else ():
            for sm in rm.scope_metrics:
                assert sm.scope.name == "firehose_buffer"
                for metric in sm.metrics:
                    units[metric.name] = metric.unit or ""
                    for p in metric.data.data_points:
                        if isinstance(p, HistogramDataPoint):
                            histograms.setdefault(metric.name, []).append(p)
                        else:
                            assert isinstance(p, NumberDataPoint)
                            key = tuple(sorted((p.attributes or {}).items()))
                            points.setdefault(metric.name, {})[key] = p.value
        return points, histograms, units

    def finished(self) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == SPAN_NAME]


@pytest.fixture
def otel() -> Iterator[Otel]:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    spans = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(spans))
    yield Otel(reader, meters, spans, tracers)
    meters.shutdown()
    tracers.shutdown()


def _config(fh: LocalFirehose, streams: tuple[str, ...] = STREAMS) -> BufferConfig:
    return BufferConfig(
        streams=streams, endpoint_url=fh.endpoint_url, region="us-east-1",
        linger_seconds=0.05, retry_initial_backoff_seconds=0.01,
        retry_max_backoff_seconds=0.05, max_batch_records=4, max_record_bytes=8 * 1024,
    )


def _event(i: int) -> dict[str, Any]:
    return {"i": i, "user": f"u-{i % 13}", "pad": "x" * (200 + i % 300)}


def _expected(stats: BufferStats) -> Points:
    """What each instrument must read for one buffer, derived from stats alone."""
    streams = {s.name: s for s in stats.streams}

    def per_stream(field: str) -> dict[tuple[tuple[str, Any], ...], float]:
        return {((STREAM, n),): getattr(s, field) for n, s in streams.items()}

    return {
        "firehose_buffer.events.put": {(): stats.events_put},
        "firehose_buffer.events.delivered": {(): stats.events_delivered},
        "firehose_buffer.events.failed": {
            (("error.type", reason),): n for reason, n in stats.failures_by_reason.items()
        },
        "firehose_buffer.events.dropped": {(): stats.events_dropped},
        "firehose_buffer.events.possibly_duplicated": {(): stats.possible_duplicates},
        "firehose_buffer.records.sent": per_stream("records_sent"),
        "firehose_buffer.records.throttled": per_stream("throttled_records"),
        "firehose_buffer.records.retried": {(): stats.retried_records},
        "firehose_buffer.requests.sent": {(): stats.requests_sent},
        "firehose_buffer.requests.throttled": {(): stats.throttled_requests},
        "firehose_buffer.data.sent": per_stream("bytes_sent"),
        "firehose_buffer.data.raw": {(): stats.raw_bytes_sent},
        "firehose_buffer.data.billed": {(): stats.billed_bytes},
        "firehose_buffer.events.buffered": {(): stats.events_buffered},
        "firehose_buffer.data.buffered": {(): stats.bytes_buffered},
        "firehose_buffer.stream.backlog": per_stream("backlog_bytes"),
        "firehose_buffer.stream.allowed_rate": per_stream("allowed_bytes_per_second"),
        "firehose_buffer.stream.allowed_share": per_stream("allowed_share"),
    }


def test_metrics_and_spans_agree_with_stats_after_faults(otel: Otel) -> None:
    with LocalFirehose(streams=STREAMS) as fh:
        fh.script(
            Fault.fail_records(0.5, stream="tel-a"),  # throttled records, retried
            Fault.fail_records(indices=[0], code="InternalFailure", stream="tel-b"),
            Fault.http_error(500, stream="tel-a"),  # whole call: unknown outcome, retried
        )
        with FirehoseBuffer(_config(fh), meter_provider=otel.meters,
                            tracer_provider=otel.tracers) as buffer:
            for i in range(3000):
                buffer.put(_event(i))
            assert buffer.flush(30), "flush timed out"
        stats = buffer.stats()
        assert fh.pending_faults == 0, "a scripted fault was never consumed"
    # The faults did happen, so the comparison below is not of zeros.
    assert stats.events_delivered == 3000
    assert stats.throttled_records > 0
    assert stats.retried_records > stats.throttled_records
    assert stats.possible_duplicates > 0

    points, histograms, units = otel.metrics()
    for name, expected in _expected(stats).items():
        assert points.get(name, {}) == {k: v for k, v in expected.items()}, name
    # Spool counters exist only where stats has them (getattr: the spool is optional).
    for field in ("spooled", "replayed"):
        value = getattr(stats, f"events_{field}", None)
        assert points.get(f"firehose_buffer.events.{field}") == (
            None if value is None else {(): value}
        )
    # Units per OpenTelemetry's guidelines, one for every instrument.
    for spec in SPECS:
        if spec.name in units:
            assert units[spec.name] == spec.unit
    assert units["firehose_buffer.put_record_batch.duration"] == "s"
    assert units["firehose_buffer.data.sent"] == "By"
    assert units["firehose_buffer.events.delivered"] == "{event}"

    # One span per PutRecordBatch, never per event; they add up to the stats.
    spans = otel.finished()
    assert len(spans) == stats.requests_sent
    records_acked = Counter[str]()
    failed_calls = 0
    for span in spans:
        attrs = span.attributes or {}
        stream = str(attrs[STREAM])
        records = int(attrs["firehose.batch.records"])  # type: ignore[arg-type]
        failed = int(attrs["firehose.batch.failed_records"])  # type: ignore[arg-type]
        assert 1 <= records <= 4
        assert int(attrs["firehose.batch.bytes"]) > 0  # type: ignore[arg-type]
        records_acked[stream] += records - failed
        if span.status.status_code is StatusCode.ERROR:
            failed_calls += 1
            assert attrs["error.type"] == "InternalFailure"
        elif failed:
            assert attrs["error.type"] in ("ServiceUnavailableException", "InternalFailure")
    assert failed_calls == 1
    assert dict(records_acked) == {s.name: s.records_sent for s in stats.streams}

    # The latency histogram counts the same calls, per stream and outcome.
    calls = Counter[tuple[str, str | None]]()
    for p in histograms["firehose_buffer.put_record_batch.duration"]:
        attrs = dict(p.attributes or {})
        calls[(str(attrs[STREAM]), attrs.get("error.type"))] += p.count  # type: ignore[arg-type]
        assert p.sum >= 0
    spans_by = Counter(
        (str((s.attributes or {})[STREAM]),
         (s.attributes or {}).get("error.type") if s.status.status_code is StatusCode.ERROR
         else None)
        for s in spans
    )
    assert calls == spans_by


def test_failed_events_carry_their_reason(otel: Otel) -> None:
    # "tel-missing" does not exist: Firehose answers ResourceNotFoundException.
    with LocalFirehose(streams=["tel-a"]) as fh:
        config = _config(fh, ("tel-a", "tel-missing"))
        config = BufferConfig(**{**_init_fields(config), "partition_key": "user",
                                 "on_failure": lambda events, reason: None})
        with FirehoseBuffer(config, meter_provider=otel.meters,
                            tracer_provider=otel.tracers) as buffer:
            for i in range(200):
                buffer.put(_event(i))
            buffer.flush(10)
        stats = buffer.stats()
    assert stats.failures_by_reason.get("ResourceNotFoundException", 0) > 0
    assert stats.events_delivered > 0
    points, _, _ = otel.metrics()
    assert points["firehose_buffer.events.failed"] == {
        (("error.type", r),): n for r, n in stats.failures_by_reason.items()
    }
    errors = [s for s in otel.finished() if s.status.status_code is StatusCode.ERROR]
    assert errors
    assert {(s.attributes or {})["error.type"] for s in errors} == {"ResourceNotFoundException"}
    assert {(s.attributes or {})[STREAM] for s in errors} == {"tel-missing"}


def _init_fields(config: BufferConfig) -> dict[str, Any]:
    names = ("streams", "endpoint_url", "region", "linger_seconds",
             "retry_initial_backoff_seconds", "retry_max_backoff_seconds",
             "max_batch_records", "max_record_bytes")
    return {n: getattr(config, n) for n in names}


def test_two_buffers_add_up_and_a_gone_buffer_still_counts(otel: Otel) -> None:
    with LocalFirehose(streams=STREAMS) as fh:
        with FirehoseBuffer(_config(fh, ("tel-a",)), meter_provider=otel.meters) as first:
            for i in range(300):
                first.put(_event(i))
        first_stats = first.stats()
        otel.metrics()  # a collection while the first buffer lives
        del first
        gc.collect()
        with FirehoseBuffer(_config(fh, ("tel-b",)), meter_provider=otel.meters) as second:
            for i in range(500):
                second.put(_event(i))
        second_stats = second.stats()
        points, _, _ = otel.metrics()
    put = points["firehose_buffer.events.put"][()]
    assert put == first_stats.events_put + second_stats.events_put == 800
    assert points["firehose_buffer.events.delivered"][()] == 800
    assert points["firehose_buffer.records.sent"] == {
        ((STREAM, "tel-a"),): first_stats.records_sent,
        ((STREAM, "tel-b"),): second_stats.records_sent,
    }
    # Levels are only the live buffer's: the gone one holds nothing.
    assert "tel-a" not in {dict(k).get(STREAM) for k in
                           points["firehose_buffer.stream.allowed_rate"]}


def test_a_buffer_closed_and_collected_before_any_reading_still_counts(otel: Otel) -> None:
    with LocalFirehose(streams=STREAMS) as fh:
        buf = FirehoseBuffer(_config(fh, ("tel-a",)), meter_provider=otel.meters)
        for i in range(250):
            buf.put(_event(i))
        assert buf.close(timeout=30)
        del buf
        gc.collect()
        points, _, _ = otel.metrics()  # the first reading, after the buffer is gone
    assert points["firehose_buffer.events.put"][()] == 250
    assert points["firehose_buffer.events.delivered"][()] == 250


def test_collection_survives_a_buffer_that_is_gone_or_broken(otel: Otel) -> None:
    with LocalFirehose(streams=["tel-a"]) as fh:
        with FirehoseBuffer(_config(fh, ("tel-a",))) as buffer:  # global no-op providers
            for i in range(10):
                buffer.put(_event(i))
        real = buffer.stats()
    assert real.events_put == 10
    calls = 0

    def flaky() -> BufferStats:
        nonlocal calls
        calls += 1
        if calls <= 1:  # the first collection's one snapshot fails
            raise RuntimeError("stats exploded")
        return real

    gone = Telemetry(lambda: None, ["x"], otel.meters, otel.tracers)
    broken = Telemetry(flaky, ["tel-a"], otel.meters, otel.tracers)
    points, _, _ = otel.metrics()
    assert points.get("firehose_buffer.events.put", {}) == {}
    # A buffer whose stats() raised once is not forgotten: it reports when it recovers.
    points, _, _ = otel.metrics()
    assert points["firehose_buffer.events.put"] == {(): 10}
    assert calls == 2, f"two collections read the buffer {calls} times, not once each"
    del gone, broken


def test_without_an_sdk_the_buffer_works_and_records_nothing() -> None:
    # The global providers are the API's no-op ones in this test process.
    with LocalFirehose(streams=["tel-a"]) as fh:
        with FirehoseBuffer(_config(fh, ("tel-a",))) as buffer:
            for i in range(100):
                buffer.put(_event(i))
            assert buffer.flush(10)
        assert buffer.stats().events_delivered == 100


def test_one_collection_reads_one_consistent_snapshot(otel: Otel) -> None:
    """Every instrument of one collection reports the same moment of the buffer: while
    producers write, ``events.put`` equals delivered + failed + dropped + buffered in every
    collection (instruments that each read their own snapshot disagree as soon as an event
    arrives between two of them)."""
    import threading  # noqa: PLC0415

    with LocalFirehose(streams=STREAMS) as fh, FirehoseBuffer(
        _config(fh), meter_provider=otel.meters,
    ) as buf:
        stop = threading.Event()

        def produce() -> None:
            i = 0
            while not stop.is_set():
                buf.put(_event(i))
                i += 1

        producer = threading.Thread(target=produce)
        producer.start()
        try:
            mismatches = []
            for _ in range(40):
                points, _, _ = otel.metrics()
                total = sum(points.get("firehose_buffer.events.put", {}).values())
                parts = sum(
                    sum(points.get(f"firehose_buffer.events.{name}", {}).values())
                    for name in ("delivered", "failed", "dropped", "buffered"))
                if total != parts:
                    mismatches.append((total, parts))
        finally:
            stop.set()
            producer.join()
    assert mismatches == [], f"{len(mismatches)} of 40 collections disagreed: {mismatches[:3]}"

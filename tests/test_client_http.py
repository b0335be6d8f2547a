"""The buffer over real HTTP: boto3 against the emulator (faults, quotas) and moto's server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import orjson
import pytest
from moto.server import ThreadedMotoServer
from producer import produce

from firehose_buffer import BufferConfig, FirehoseBuffer, Quota, sharded_stream_names
from firehose_buffer.emulator import EmulatorControl, FaultRates, LocalFirehose

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _event(i: int, size: int = 1000, run: str = "a") -> dict[str, str]:
    base = {"event_id": f"{run}-{i}", "event_type": "page_view", "user_id": f"u-{i % 97}"}
    base["pad"] = "x" * max(0, size - len(orjson.dumps(base)) - 10)
    return base


def _delivered_ids(lines: list[bytes]) -> Counter[str]:
    return Counter(orjson.loads(line)["event_id"] for line in lines)


def _wait_until(predicate: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def test_every_event_survives_every_fault(tmp_path: Path) -> None:
    streams = ["faulty-0", "faulty-1", "faulty-2"]
    rates = FaultRates(
        record_service_unavailable=0.3, record_internal_failure=0.05, http_500=0.05,
        http_503=0.05, reset_before_store=0.04, reset_after_store=0.04,
        latency=0.03, latency_seconds=1.0,
    )
    failures: list[tuple[list[bytes], str]] = []
    # 30% of records failing as throttled drives the adaptive rate to its floor: the high
    # quota keeps that floor fast enough for a short test.
    with LocalFirehose(streams=streams, data_dir=tmp_path, fault_rates=rates, seed=11,
                       quota=Quota.HIGH) as fh:
        config = BufferConfig(
            streams=streams, endpoint_url=fh.endpoint_url, region="us-east-1", quota=Quota.HIGH,
            linger_seconds=0.05, read_timeout_seconds=0.5, connect_timeout_seconds=0.5,
            retry_initial_backoff_seconds=0.01, retry_max_backoff_seconds=0.2,
            # Small records and batches: many calls, so every kind of fault happens.
            max_record_bytes=10_000, max_batch_records=4,
            on_failure=lambda events, reason: failures.append((events, reason)),
        )
        n = 3000
        with FirehoseBuffer(config) as buf:
            for i in range(n):
                buf.put(_event(i, size=300 + (i * 37) % 3000))
                if i % 500 == 499:
                    # Spread puts over time so many calls, and so many faults, happen.
                    assert buf.flush(timeout=60), "flush did not finish"
            assert buf.flush(timeout=60)
            stats = buf.stats()
        seen = Counter[str]()
        for name in streams:
            seen += _delivered_ids(fh.delivered_lines(name))
        service = fh.stats()
    assert failures == []
    assert set(seen) == {f"a-{i}" for i in range(n)}, "an event was lost or invented"
    duplicated = sum(count - 1 for count in seen.values())
    assert duplicated <= stats.possible_duplicates
    assert stats.events_delivered == n and stats.events_failed == 0
    # The faults really happened, so the test is not passing vacuously.
    for kind in ("records_service_unavailable", "http_500", "http_503", "reset_before_store",
                 "reset_after_store", "latency"):
        assert service.faults.get(kind, 0) > 0, f"no {kind} fault was injected"
    assert stats.retried_records > 0 and stats.possible_duplicates > 0


def test_record_failures_alone_never_duplicate(tmp_path: Path) -> None:
    rates = FaultRates(record_service_unavailable=0.3, record_internal_failure=0.1)
    with LocalFirehose(streams=["s"], data_dir=tmp_path, fault_rates=rates, seed=3) as fh:
        config = BufferConfig(streams=["s"], endpoint_url=fh.endpoint_url, region="us-east-1",
                              linger_seconds=0.05, retry_initial_backoff_seconds=0.01,
                              retry_max_backoff_seconds=0.1)
        with FirehoseBuffer(config) as buf:
            for i in range(2000):
                buf.put(_event(i, size=700))
            assert buf.flush(timeout=60)
            stats = buf.stats()
        seen = _delivered_ids(fh.delivered_lines("s"))
    assert set(seen) == {f"a-{i}" for i in range(2000)}
    assert max(seen.values()) == 1
    assert stats.possible_duplicates == 0 and stats.throttled_records > 0


def test_non_retryable_error_fails_at_once_and_spares_other_streams(tmp_path: Path) -> None:
    failures: list[tuple[list[bytes], str]] = []
    with LocalFirehose(streams=["exists"], data_dir=tmp_path) as fh:
        config = BufferConfig(
            streams=["exists", "missing"], endpoint_url=fh.endpoint_url, region="us-east-1",
            partition_key="user_id", linger_seconds=0.05,
            on_failure=lambda events, reason: failures.append((events, reason)),
        )
        with FirehoseBuffer(config) as buf:
            for i in range(400):
                buf.put(_event(i, size=200))
            assert buf.flush(timeout=30).pending == 0
            stats = buf.stats()
        delivered = _delivered_ids(fh.delivered_lines("exists"))
    failed = [orjson.loads(e)["event_id"] for events, _ in failures for e in events]
    assert {reason for _, reason in failures} == {"ResourceNotFoundException"}
    assert sorted(failed + list(delivered)) == sorted(f"a-{i}" for i in range(400))
    assert stats.events_failed == len(failed) > 0
    assert stats.failures_by_reason == {"ResourceNotFoundException": len(failed)}
    assert stats.last_error is not None and "missing" in stats.last_error


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[tuple[str, EmulatorControl]]:
    """The emulator in its own process, as in production the service is elsewhere."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "firehose_buffer.emulator", "--port", "0",
         "--data-dir", str(tmp_path / "delivered"), "--buffer-seconds", "0.5"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on "), line
        endpoint = line.split()[-1]
        yield endpoint, EmulatorControl(endpoint)
    finally:
        proc.terminate()
        proc.wait(10)


def _all_ids(control: EmulatorControl, streams: tuple[str, ...]) -> Counter[str]:
    files = control.flush()
    seen = Counter[str]()
    for name in streams:
        for path in files.get(name, []):
            seen += _delivered_ids(path.read_bytes().splitlines())
    return seen


def test_sixteen_streams_at_quota_cause_no_throttling(
    emulator_process: tuple[str, EmulatorControl],
) -> None:
    endpoint, control = emulator_process
    streams = sharded_stream_names("quota", 16)
    for name in streams:
        control.create_stream(name)
    config = BufferConfig(streams=streams, endpoint_url=endpoint, region="us-east-1")
    events_per_second, seconds, size = 4000, 4, 4000  # 16 MB/s offered
    n = events_per_second * seconds
    start = time.monotonic()
    with FirehoseBuffer(config) as buf:
        for i in range(n):
            buf.put(_event(i, size=size))
            if i % 400 == 399:  # pace the offer at 16 MB/s
                ahead = start + (i + 1) / events_per_second - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        assert buf.flush(timeout=60)
        stats = buf.stats()
    service = control.stats()
    assert service.throttled_requests == 0 and service.throttled_records == 0
    assert stats.throttled_records == 0 and stats.events_delivered == n
    seen = _all_ids(control, streams)
    assert set(seen) == {f"a-{i}" for i in range(n)}


def test_a_second_producer_causes_throttles_and_both_lose_nothing(
    emulator_process: tuple[str, EmulatorControl],
) -> None:
    endpoint, control = emulator_process
    streams = sharded_stream_names("shared", 4)
    for name in streams:
        control.create_stream(name)
    # Each producer alone offers ~6 MB/s to 4 streams with 4 MiB/s of quota in all; neither can
    # see the other's traffic, only the throttling it causes.
    other = subprocess.Popen([sys.executable, str(Path(__file__).with_name("producer.py")),
                              endpoint, "4"],
                             stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert other.stdout is not None
    assert other.stdout.readline().strip() == "ready"
    first = produce(endpoint, 4, "a")
    out, _ = other.communicate(timeout=150)
    second = orjson.loads(out.strip().splitlines()[-1])
    for result in (first, second):
        assert result["ok"] and result["failed"] == 0, result
        if result["throttled"]:
            assert result["lowest_share"] < 1.0, f"throttled but never slowed down: {result}"
    service = control.stats()
    assert service.throttled_records + service.throttled_requests > 0, "no contention happened"
    assert first["throttled"] + second["throttled"] > 0
    seen = _all_ids(control, streams)
    expected = {f"a-{i}" for i in range(first["n"])} | {f"b-{i}" for i in range(second["n"])}
    assert set(seen) == expected


def test_moto_server_delivers_valid_jsonl_to_s3() -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        firehose = boto3.client("firehose", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="lake")
        streams = sharded_stream_names("moto", 3)
        for name in streams:
            firehose.create_delivery_stream(
                DeliveryStreamName=name, DeliveryStreamType="DirectPut",
                ExtendedS3DestinationConfiguration={
                    "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                    "BucketARN": "arn:aws:s3:::lake", "Prefix": "events/",
                },
            )
        config = BufferConfig(streams=streams, endpoint_url=endpoint, region="us-east-1",
                              linger_seconds=0.1)
        n = 1500
        with FirehoseBuffer(config) as buf:
            for i in range(n):
                buf.put(_event(i, size=500 + i % 3500))
            assert buf.flush(timeout=60)
        lines: list[bytes] = []
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix="events/")
        for page in pages:
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket="lake", Key=obj["Key"])["Body"].read()
                assert body.endswith(b"\n"), "every object is whole JSON Lines"
                lines.extend(body.splitlines())
    finally:
        server.stop()
    seen = _delivered_ids(lines)  # each line parses as one JSON event
    assert set(seen) == {f"a-{i}" for i in range(n)} and max(seen.values()) == 1


def test_buffer_is_usable_from_many_threads_over_http(tmp_path: Path) -> None:
    with LocalFirehose(streams=sharded_stream_names("mt", 4), data_dir=tmp_path) as fh:
        config = BufferConfig(streams=sharded_stream_names("mt", 4), quota=Quota.HIGH,
                              endpoint_url=fh.endpoint_url, region="us-east-1",
                              linger_seconds=0.1)
        with FirehoseBuffer(config) as buf:
            def produce(t: int) -> None:
                for i in range(1000):
                    buf.put(_event(i, size=600, run=f"t{t}"))

            threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert buf.flush(timeout=60)
        seen = Counter[str]()
        for name in config.streams:
            seen += _delivered_ids(fh.delivered_lines(name))
    assert set(seen) == {f"t{t}-{i}" for t in range(8) for i in range(1000)}

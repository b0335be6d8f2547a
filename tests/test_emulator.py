"""The local Firehose through boto3 over real HTTP: API, limits, quota, delivery, stats."""

from __future__ import annotations

import base64
import http.client
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ParamValidationError

from firehose_buffer._service.firehose import FIREHOSE
from firehose_buffer.emulator import FaultRates, LocalFirehose
from firehose_buffer.quota import Quota

MAX_BATCH_BYTES = FIREHOSE.max_batch_bytes
MAX_RECORD_BYTES = FIREHOSE.max_record_bytes

NO_RETRIES = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30)
# Quota high enough never to throttle the limit tests' 4 MB batches.
UNLIMITED = Quota(requests_per_second=1e6, bytes_per_second=1e12, records_per_second=1e9)


class FakeClock:
    """A monotonic clock the test moves by hand, so token buckets are exact."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fh(tmp_path: Path) -> Iterator[LocalFirehose]:
    with LocalFirehose(
        data_dir=tmp_path / "out", streams=["s"], keep_records=True, quota=UNLIMITED,
        buffer_seconds=3600,
    ) as emulator:
        yield emulator


def client_of(fh: LocalFirehose, **options: Any) -> Any:
    return fh.client(config=NO_RETRIES.merge(Config(**options)) if options else NO_RETRIES)


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = exc.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def records(*datas: bytes) -> list[dict[str, bytes]]:
    return [{"Data": d} for d in datas]


# -- every operation round-trips through botocore ----------------------------------------------


def test_create_describe_list_delete_round_trip(fh: LocalFirehose) -> None:
    client = client_of(fh)
    arn = client.create_delivery_stream(
        DeliveryStreamName="events",
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": "arn:aws:s3:::bucket",
            "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 60},
        },
    )["DeliveryStreamARN"]
    assert arn == "arn:aws:firehose:us-east-1:123456789012:deliverystream/events"

    description = client.describe_delivery_stream(DeliveryStreamName="events")[
        "DeliveryStreamDescription"
    ]
    assert description["DeliveryStreamName"] == "events"
    assert description["DeliveryStreamARN"] == arn
    assert description["DeliveryStreamStatus"] == "ACTIVE"
    assert description["DeliveryStreamType"] == "DirectPut"
    assert description["VersionId"] == "1"
    assert description["HasMoreDestinations"] is False
    assert abs(description["CreateTimestamp"].timestamp() - time.time()) < 60
    (destination,) = description["Destinations"]
    s3 = destination["ExtendedS3DestinationDescription"]
    assert s3["BucketARN"] == "arn:aws:s3:::bucket"
    assert s3["BufferingHints"] == {"SizeInMBs": 64, "IntervalInSeconds": 60}

    listed = client.list_delivery_streams()
    assert listed["DeliveryStreamNames"] == ["events", "s"]
    assert listed["HasMoreDeliveryStreams"] is False

    client.delete_delivery_stream(DeliveryStreamName="events")
    assert client.list_delivery_streams()["DeliveryStreamNames"] == ["s"]
    with pytest.raises(ClientError) as exc:
        client.describe_delivery_stream(DeliveryStreamName="events")
    assert error_of(exc)[:2] == (400, "ResourceNotFoundException")


def test_create_existing_stream_is_resource_in_use(fh: LocalFirehose) -> None:
    client = client_of(fh)
    with pytest.raises(client.exceptions.ResourceInUseException) as exc:
        client.create_delivery_stream(DeliveryStreamName="s")
    assert error_of(exc) == (400, "ResourceInUseException",
                             "Firehose s under accountId 123456789012 already exists")


def test_delete_unknown_stream_is_not_found(fh: LocalFirehose) -> None:
    with pytest.raises(ClientError) as exc:
        client_of(fh).delete_delivery_stream(DeliveryStreamName="nope")
    assert error_of(exc) == (400, "ResourceNotFoundException",
                             "Firehose nope under account 123456789012 not found.")


def test_list_delivery_streams_pages(fh: LocalFirehose) -> None:
    for name in ("a", "b", "c"):
        fh.create_stream(name)
    client = client_of(fh)
    first = client.list_delivery_streams(Limit=2)
    assert first["DeliveryStreamNames"] == ["a", "b"]
    assert first["HasMoreDeliveryStreams"] is True
    rest = client.list_delivery_streams(Limit=2, ExclusiveStartDeliveryStreamName="b")
    assert rest["DeliveryStreamNames"] == ["c", "s"]
    assert rest["HasMoreDeliveryStreams"] is False


def test_put_record_batch_and_put_record_round_trip(fh: LocalFirehose) -> None:
    client = client_of(fh)
    response = client.put_record_batch(
        DeliveryStreamName="s", Records=records(b'{"n":1}\n', b'{"n":2}\n', b"")
    )
    assert response["FailedPutCount"] == 0
    assert response["Encrypted"] is False
    ids = [entry["RecordId"] for entry in response["RequestResponses"]]
    single = client.put_record(DeliveryStreamName="s", Record={"Data": b'{"n":3}\n'})
    ids.append(single["RecordId"])
    assert len(set(ids)) == 4
    assert fh.accepted_records("s") == [b'{"n":1}\n', b'{"n":2}\n', b"", b'{"n":3}\n']
    assert fh.delivered_lines("s") == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    stats = fh.stats("s")
    assert (stats.requests, stats.records_accepted, stats.bytes_accepted) == (2, 4, 24)
    assert stats.records_failed == stats.throttled_records == stats.injected_faults == 0


def test_put_to_unknown_stream_is_not_found(fh: LocalFirehose) -> None:
    client = client_of(fh)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.put_record_batch(DeliveryStreamName="nope", Records=records(b"x"))
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.put_record(DeliveryStreamName="nope", Record={"Data": b"x"})


def signed(fh: LocalFirehose, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """``headers`` plus a SigV4 signature over ``body`` with the emulator's test credentials."""
    request = AWSRequest("POST", fh.endpoint_url + "/", data=body, headers=headers)
    SigV4Auth(Credentials("testing", "testing"), "firehose", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def raw_post(fh: LocalFirehose, target: str, body: bytes) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", fh.port, timeout=10)
    try:
        conn.request("POST", "/", body=body, headers=signed(fh, body, {
            "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1",
        }))
        response = conn.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        conn.close()


def test_unknown_operation_is_a_400_botocore_can_parse(fh: LocalFirehose) -> None:
    status, body = raw_post(fh, "Firehose_20150804.StartDeliveryStreamEncryption", b"{}")
    assert status == 400
    # botocore keeps what follows '#': the code a client sees is UnknownOperationException.
    assert body["__type"].rsplit("#", 1)[-1] == "UnknownOperationException"
    status, body = raw_post(fh, "Kinesis_20131202.PutRecords", b"{}")
    assert status == 400
    status, body = raw_post(fh, "Firehose_20150804.PutRecordBatch", b"not json")
    assert (status, body["__type"]) == (400, "SerializationException")


def test_keep_alive_connection_serves_many_requests(fh: LocalFirehose) -> None:
    body = orjson.dumps({"DeliveryStreamName": "s",
                         "Records": [{"Data": base64.b64encode(b"k\n").decode()}]})
    conn = http.client.HTTPConnection("127.0.0.1", fh.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("POST", "/", body=body, headers=signed(fh, body, {
                "X-Amz-Target": "Firehose_20150804.PutRecordBatch",
            }))
            response = conn.getresponse()
            assert response.status == 200
            assert orjson.loads(response.read())["FailedPutCount"] == 0
    finally:
        conn.close()
    assert fh.delivered_lines("s") == [b"k"] * 3


# -- hard limits -------------------------------------------------------------------------------


def test_more_than_500_records_is_invalid_argument(fh: LocalFirehose) -> None:
    client = client_of(fh)
    with pytest.raises(client.exceptions.InvalidArgumentException) as exc:
        client.put_record_batch(DeliveryStreamName="s", Records=records(*[b"x"] * 501))
    status, _, message = error_of(exc)
    assert status == 400
    assert "Member must have length less than or equal to 500" in message
    client.put_record_batch(DeliveryStreamName="s", Records=records(*[b"x"] * 500))
    assert fh.stats("s").records_accepted == 500


def test_zero_records_is_invalid_argument(fh: LocalFirehose) -> None:
    with pytest.raises(ParamValidationError):  # botocore checks this one itself...
        client_of(fh).put_record_batch(DeliveryStreamName="s", Records=[])
    client = client_of(fh, parameter_validation=False)  # ...so bypass it to reach the server
    with pytest.raises(client.exceptions.InvalidArgumentException) as exc:
        client.put_record_batch(DeliveryStreamName="s", Records=[])
    assert "Member must have length greater than or equal to 1" in error_of(exc)[2]


def test_record_over_1024000_bytes_is_invalid_argument(fh: LocalFirehose) -> None:
    client = client_of(fh)
    with pytest.raises(client.exceptions.InvalidArgumentException) as exc:
        client.put_record_batch(
            DeliveryStreamName="s", Records=records(b"ok", b"x" * (MAX_RECORD_BYTES + 1))
        )
    message = error_of(exc)[2]
    assert message.startswith("1 validation error detected")
    assert "'records.2.member.data'" in message
    assert f"less than or equal to {MAX_RECORD_BYTES}" in message
    with pytest.raises(client.exceptions.InvalidArgumentException):
        client.put_record(DeliveryStreamName="s", Record={"Data": b"x" * (MAX_RECORD_BYTES + 1)})
    # Exactly the limit is fine, and nothing of the rejected calls was stored.
    client.put_record(DeliveryStreamName="s", Record={"Data": b"y" * MAX_RECORD_BYTES})
    assert [len(r) for r in fh.accepted_records("s")] == [MAX_RECORD_BYTES]


def test_batch_over_4_mib_is_invalid_argument(fh: LocalFirehose) -> None:
    client = client_of(fh)
    big = b"z" * 1_000_000
    with pytest.raises(client.exceptions.InvalidArgumentException) as exc:
        client.put_record_batch(DeliveryStreamName="s", Records=records(*[big] * 5))
    assert error_of(exc) == (400, "InvalidArgumentException", "Records size exceeds 4 MB limit")
    # 4 MiB of decoded Data is the limit, not of the base64 on the wire.
    last = b"w" * (MAX_BATCH_BYTES - 4 * 1_000_000)
    response = client.put_record_batch(DeliveryStreamName="s", Records=records(*[big] * 4, last))
    assert response["FailedPutCount"] == 0
    assert fh.stats("s").bytes_accepted == MAX_BATCH_BYTES


# -- quota -------------------------------------------------------------------------------------


def test_quota_throttles_records_then_requests_exactly(tmp_path: Path) -> None:
    clock = FakeClock()
    quota = Quota(requests_per_second=2, bytes_per_second=1_000, records_per_second=5)
    with LocalFirehose(data_dir=tmp_path, quota=quota, streams=["s"], clock=clock,
                       keep_records=True) as fh:
        client = client_of(fh)
        sent = [b"r%d\n" % i for i in range(8)]
        response = client.put_record_batch(DeliveryStreamName="s", Records=records(*sent))
        assert response["FailedPutCount"] == 3
        entries = response["RequestResponses"]
        assert all("RecordId" in e for e in entries[:5])
        assert entries[5:] == [
            {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."}
        ] * 3
        # One request token left, no record tokens: the call passes, its records do not.
        response = client.put_record_batch(DeliveryStreamName="s", Records=records(b"late\n"))
        assert response["FailedPutCount"] == 1
        # No request token left: the whole call is refused.
        with pytest.raises(ClientError) as exc:
            client.put_record_batch(DeliveryStreamName="s", Records=records(b"refused\n"))
        assert error_of(exc) == (503, "ServiceUnavailableException", "Slow down.")

        stats = fh.stats("s")
        assert stats.requests == 3
        assert stats.throttled_requests == 1
        assert stats.throttled_records == 4
        assert stats.records_failed == 5
        assert stats.records_accepted == 5
        assert stats.injected_faults == 0
        assert fh.accepted_records("s") == sent[:5]

        clock.advance(1.0)  # a full second refills every bucket to capacity, no further
        response = client.put_record_batch(DeliveryStreamName="s", Records=records(*sent))
        assert response["FailedPutCount"] == 3


def test_quota_bytes_a_record_that_does_not_fit_leaves_room_for_later_ones(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    quota = Quota(requests_per_second=10, bytes_per_second=100, records_per_second=100)
    with LocalFirehose(data_dir=tmp_path, quota=quota, streams=["s"], clock=clock,
                       keep_records=True) as fh:
        client = client_of(fh)
        sent = [b"a" * 60, b"b" * 60, b"c" * 30, b"d" * 20]
        response = client.put_record_batch(DeliveryStreamName="s", Records=records(*sent))
        assert ["RecordId" in e for e in response["RequestResponses"]] == [
            True, False, True, False,
        ]
        assert fh.accepted_records("s") == [sent[0], sent[2]]
        assert fh.stats("s").throttled_records == 2
        clock.advance(0.5)  # 10 bytes were left, half a second refills 50
        response = client.put_record_batch(DeliveryStreamName="s", Records=records(b"e" * 61))
        assert response["FailedPutCount"] == 1
        response = client.put_record_batch(DeliveryStreamName="s", Records=records(b"f" * 60))
        assert response["FailedPutCount"] == 0
        # PutRecord has no per-record answer: a throttled record fails the call.
        with pytest.raises(ClientError) as exc:
            client.put_record(DeliveryStreamName="s", Record={"Data": b"g"})
        assert error_of(exc) == (503, "ServiceUnavailableException", "Slow down.")


def test_quota_per_stream_and_changes(tmp_path: Path) -> None:
    clock = FakeClock()
    tiny = Quota(requests_per_second=100, bytes_per_second=1e9, records_per_second=2)
    with LocalFirehose(data_dir=tmp_path, quota=tiny, clock=clock, streams=["default"]) as fh:
        fh.create_stream("roomy", quota=Quota.HIGH)
        client = client_of(fh)
        batch = records(*[b"x"] * 10)
        assert client.put_record_batch(DeliveryStreamName="default", Records=batch)[
            "FailedPutCount"] == 8
        assert client.put_record_batch(DeliveryStreamName="roomy", Records=batch)[
            "FailedPutCount"] == 0
        fh.set_quota(Quota.STANDARD)  # the default: streams without their own quota follow
        assert client.put_record_batch(DeliveryStreamName="default", Records=batch)[
            "FailedPutCount"] == 0
        fh.set_quota(tiny, stream="roomy")
        assert client.put_record_batch(DeliveryStreamName="roomy", Records=batch)[
            "FailedPutCount"] == 8
        assert fh.stats("default").throttled_records == 8
        assert fh.stats("roomy").throttled_records == 8
        assert fh.stats().throttled_records == 16


def test_quota_with_the_real_clock_admits_about_one_second_of_burst(tmp_path: Path) -> None:
    quota = Quota(requests_per_second=1_000, bytes_per_second=1e9, records_per_second=100)
    with LocalFirehose(data_dir=tmp_path, quota=quota, streams=["s"]) as fh:
        response = client_of(fh).put_record_batch(
            DeliveryStreamName="s", Records=records(*[b"x\n"] * 300)
        )
        stats = fh.stats("s")
        # The bucket starts full (100) and refills by microseconds while the call is parsed.
        assert 100 <= stats.records_accepted <= 110
        assert response["FailedPutCount"] == stats.throttled_records == 300 - stats.records_accepted
        assert len(fh.delivered_lines("s")) == stats.records_accepted


def test_standard_quota_does_not_throttle_modest_traffic(tmp_path: Path) -> None:
    with LocalFirehose(data_dir=tmp_path, streams=["s"]) as fh:  # Quota.STANDARD
        client = client_of(fh)
        for _ in range(20):
            client.put_record_batch(DeliveryStreamName="s", Records=records(*[b"y" * 100] * 50))
        stats = fh.stats("s")
        assert (stats.throttled_requests, stats.throttled_records) == (0, 0)
        assert stats.records_accepted == 1_000


# -- delivery ----------------------------------------------------------------------------------

def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` (set by a background thread) until true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


FILE_NAME = re.compile(
    r"(?P<stream>.+)-1-(?P<Y>\d{4})-(?P<m>\d\d)-(?P<d>\d\d)-(?P<H>\d\d)-\d\d-\d\d-"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)



def test_delivery_layout_and_contents_match_accepted_records(tmp_path: Path) -> None:
    data_dir = tmp_path / "out"
    # A 100-byte buffer makes a file every two 60-byte records, without any flush.
    with LocalFirehose(data_dir=data_dir, streams=["logs"], quota=UNLIMITED,
                       buffer_bytes=100, buffer_seconds=3600, keep_records=True) as fh:
        client = client_of(fh)
        sent = [b'{"i":%03d,"pad":"%s"}\n' % (i, b"p" * 40) for i in range(7)]
        for record in sent:
            client.put_record(DeliveryStreamName="logs", Record={"Data": record})
        wait_for(lambda: len(fh.delivered_files("logs")) >= 3)  # written by the writer thread
        assert len(fh.delivered_files("logs")) == 3  # the 7th record is still buffered
        assert fh.delivered_lines("logs") == [r.rstrip(b"\n") for r in sent]
        files = fh.delivered_files("logs")
        assert len(files) == 4
        assert b"".join(p.read_bytes() for p in files) == b"".join(sent)
        assert fh.delivered_bytes("logs") == b"".join(fh.accepted_records("logs"))
        for path in files:
            relative = path.relative_to(data_dir)
            match = FILE_NAME.fullmatch(relative.name)
            assert match, relative
            assert match["stream"] == "logs"
            assert relative.parts[:-1] == ("logs", match["Y"], match["m"], match["d"], match["H"])
        # Only finished files under the stream's folder: no temporary names.
        assert sorted(p for p in (data_dir / "logs").rglob("*") if p.is_file()) == sorted(files)


def test_delivery_by_age_without_flush(tmp_path: Path) -> None:
    with LocalFirehose(data_dir=tmp_path, streams=["s"], buffer_seconds=0.1) as fh:
        client_of(fh).put_record(DeliveryStreamName="s", Record={"Data": b"aged\n"})
        wait_for(lambda: bool(fh.delivered_files("s")))
        assert fh.delivered_files("s")[0].read_bytes() == b"aged\n"


def test_stop_writes_pending_records_and_temp_dir_is_removed(tmp_path: Path) -> None:
    with LocalFirehose(data_dir=tmp_path, streams=["s"], buffer_seconds=3600) as fh:
        client_of(fh).put_record(DeliveryStreamName="s", Record={"Data": b"last\n"})
        assert fh.delivered_files("s") == []
    (path,) = fh.delivered_files("s")
    assert path.read_bytes() == b"last\n"

    with LocalFirehose(streams=["s"]) as temp:
        client_of(temp).put_record(DeliveryStreamName="s", Record={"Data": b"gone\n"})
        assert temp.delivered_lines("s") == [b"gone"]
        data_dir = temp.data_dir
        assert data_dir.is_dir()
    assert not data_dir.exists()


def test_accepted_records_needs_keep_records(tmp_path: Path) -> None:
    with LocalFirehose(data_dir=tmp_path, streams=["s"]) as fh, \
            pytest.raises(RuntimeError, match="keep_records"):
        fh.accepted_records("s")


def test_concurrent_producers_lose_nothing(fh: LocalFirehose) -> None:
    def produce(worker: int) -> None:
        client = client_of(fh)
        for call in range(25):
            batch = [b"%d-%d-%d\n" % (worker, call, i) for i in range(10)]
            assert client.put_record_batch(DeliveryStreamName="s", Records=records(*batch))[
                "FailedPutCount"] == 0

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = fh.delivered_lines("s")
    assert len(lines) == 1_000
    assert set(lines) == {b"%d-%d-%d" % (w, c, i) for w in range(4) for c in range(25)
                          for i in range(10)}
    assert lines == [r.rstrip(b"\n") for r in fh.accepted_records("s")]
    assert fh.stats().requests == 100


# -- lifecycle ---------------------------------------------------------------------------------


def test_stop_ends_threads_even_with_idle_keep_alive_connections(tmp_path: Path) -> None:
    fh = LocalFirehose(data_dir=tmp_path, streams=["s"]).start()
    client = client_of(fh)
    client.put_record(DeliveryStreamName="s", Record={"Data": b"x"})  # leaves a pooled connection
    assert any(t.name.startswith("firehose-emulator-conn") for t in threading.enumerate())
    fh.stop()
    fh.stop()  # idempotent
    assert not [t for t in threading.enumerate() if t.name.startswith("firehose-emulator")]


def test_fault_rates_validation() -> None:
    with pytest.raises(ValueError, match="at most 1"):
        FaultRates(http_500=0.6, http_503=0.6)
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        FaultRates(latency=2)
    assert FaultRates.parse("http_500=0.1, record-service-unavailable=0.2") == FaultRates(
        http_500=0.1, record_service_unavailable=0.2
    )
    with pytest.raises(ValueError, match="NAME=VALUE"):
        FaultRates.parse("bogus=1")


def test_port_in_use_fails_start_cleanly(tmp_path: Path) -> None:
    with LocalFirehose(data_dir=tmp_path / "one") as first:
        second = LocalFirehose(port=first.port)
        with pytest.raises(OSError, match="in use"):
            second.start()
        second.stop()
    assert fh_threads() == []


def fh_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("firehose-emulator")]

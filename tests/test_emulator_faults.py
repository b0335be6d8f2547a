"""Injected faults, scripted and random, as a client sees them through boto3 and raw sockets."""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ConnectionClosedError

from firehose_buffer.emulator import Fault, FaultKind, FaultRates, LocalFirehose
from firehose_buffer.quota import Quota

NO_RETRIES = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30)
UNLIMITED = Quota(requests_per_second=1e6, bytes_per_second=1e12, records_per_second=1e9)
SLOW_DOWN = {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."}


@pytest.fixture
def fh(tmp_path: Path) -> Iterator[LocalFirehose]:
    with LocalFirehose(data_dir=tmp_path, streams=["s", "t"], keep_records=True,
                       quota=UNLIMITED, buffer_seconds=3600) as emulator:
        yield emulator


@pytest.fixture
def client(fh: LocalFirehose) -> Any:
    return fh.client(config=NO_RETRIES)


def batch(*datas: bytes) -> list[dict[str, bytes]]:
    return [{"Data": d} for d in datas]


def put(client: Any, *datas: bytes, stream: str = "s") -> dict[str, Any]:
    response: dict[str, Any] = client.put_record_batch(DeliveryStreamName=stream,
                                                       Records=batch(*datas))
    return response


def test_fail_records_fraction_fails_evenly_spread_records(fh: LocalFirehose, client: Any) -> None:
    fh.script(Fault.fail_records(0.5))
    response = put(client, b"0\n", b"1\n", b"2\n", b"3\n")
    assert response["FailedPutCount"] == 2
    entries = response["RequestResponses"]
    assert "RecordId" in entries[0]
    assert "RecordId" in entries[2]
    assert entries[1] == entries[3] == SLOW_DOWN
    assert fh.delivered_lines("s") == [b"0", b"2"]
    stats = fh.stats("s")
    assert stats.faults == {"records_service_unavailable": 2}
    assert (stats.throttled_requests, stats.throttled_records) == (0, 0)  # not the quota's doing
    assert stats.records_failed == 2
    assert fh.pending_faults == 0
    assert put(client, b"4\n")["FailedPutCount"] == 0  # consumed: the next call is clean


def test_fail_records_by_index_with_internal_failure(fh: LocalFirehose, client: Any) -> None:
    fh.script(Fault.fail_records(code="InternalFailure", indices=[1]))
    response = put(client, b"a\n", b"b\n", b"c\n")
    assert response["FailedPutCount"] == 1
    failed = response["RequestResponses"][1]
    assert failed["ErrorCode"] == "InternalFailure"
    assert "RecordId" not in failed
    assert fh.accepted_records("s") == [b"a\n", b"c\n"]
    assert fh.stats("s").faults == {"records_internal_failure": 1}


def test_fail_records_on_put_record_fails_the_call(fh: LocalFirehose, client: Any) -> None:
    fh.script(Fault.fail_records(), Fault.fail_records(code="InternalFailure"))
    with pytest.raises(ClientError) as exc:
        client.put_record(DeliveryStreamName="s", Record={"Data": b"x"})
    assert exc.value.response["Error"]["Code"] == "ServiceUnavailableException"
    with pytest.raises(ClientError) as exc:
        client.put_record(DeliveryStreamName="s", Record={"Data": b"x"})
    assert exc.value.response["Error"]["Code"] == "InternalFailure"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert fh.stats("s").records_accepted == 0


@pytest.mark.parametrize(("status", "code"), [
    (500, "InternalFailure"), (503, "ServiceUnavailableException"),
])
def test_http_error_fails_the_whole_call_and_stores_nothing(
    fh: LocalFirehose, client: Any, status: int, code: str,
) -> None:
    fh.script(Fault.http_error(status))
    with pytest.raises(ClientError) as exc:
        put(client, b"lost\n")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert exc.value.response["Error"]["Code"] == code
    assert fh.delivered_lines("s") == []
    stats = fh.stats("s")
    assert stats.faults == {f"http_{status}": 1}
    assert stats.throttled_requests == 0
    assert stats.records_failed == 1


def test_http_error_is_retried_by_botocores_default_policy(fh: LocalFirehose) -> None:
    fh.script(Fault.http_error(503), Fault.http_error(500))
    retrying = fh.client(config=Config(retries={"mode": "standard", "total_max_attempts": 3}))
    response = put(retrying, b"third time\n")
    assert response["FailedPutCount"] == 0
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert fh.delivered_lines("s") == [b"third time"]


def test_latency_delays_then_succeeds(fh: LocalFirehose, client: Any) -> None:
    fh.script(Fault.latency(0.3))
    started = time.monotonic()
    assert put(client, b"slow\n")["FailedPutCount"] == 0
    assert time.monotonic() - started >= 0.3
    assert fh.stats("s").faults == {"latency": 1}
    assert fh.delivered_lines("s") == [b"slow"]


def test_reset_before_store_is_a_connection_error_and_stores_nothing(
    fh: LocalFirehose, client: Any,
) -> None:
    fh.script(Fault.reset_before_store())
    with pytest.raises(ConnectionClosedError):
        put(client, b"never\n")
    assert fh.delivered_lines("s") == []
    assert fh.stats("s").faults == {"reset_before_store": 1}
    assert put(client, b"after\n")["FailedPutCount"] == 0  # the client reconnects fine
    assert fh.delivered_lines("s") == [b"after"]


def test_reset_after_store_stores_the_records(fh: LocalFirehose, client: Any) -> None:
    fh.script(Fault.reset_after_store())
    with pytest.raises(ConnectionClosedError):
        put(client, b"stored\n", b"anyway\n")
    assert fh.delivered_lines("s") == [b"stored", b"anyway"]
    stats = fh.stats("s")
    assert stats.faults == {"reset_after_store": 1}
    assert stats.records_accepted == 2


@pytest.mark.parametrize("fault", [Fault.reset_before_store(), Fault.reset_after_store()])
def test_reset_is_a_real_tcp_rst(fh: LocalFirehose, fault: Fault) -> None:
    fh.script(fault)
    body = orjson.dumps({"DeliveryStreamName": "s",
                         "Records": [{"Data": base64.b64encode(b"r\n").decode()}]})
    signing = AWSRequest("POST", "http://x/", data=body, headers={
        "X-Amz-Target": "Firehose_20150804.PutRecordBatch",
        "Content-Type": "application/x-amz-json-1.1",
    })
    SigV4Auth(Credentials("testing", "testing"), "firehose", "us-east-1").add_auth(signing)
    head = "".join(f"{k}: {v}\r\n" for k, v in signing.headers.items()).encode()
    request = (
        b"POST / HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s"
        % (head, len(body), body)
    )
    with socket.create_connection(("127.0.0.1", fh.port), timeout=10) as sock:
        sock.sendall(request)
        with pytest.raises(ConnectionResetError):
            sock.recv(65536)  # a FIN would return b"" instead


def test_stream_filter_skips_calls_to_other_streams(fh: LocalFirehose, client: Any) -> None:
    fh.script(Fault.http_error(500, stream="t"))
    assert put(client, b"fine\n", stream="s")["FailedPutCount"] == 0
    assert fh.pending_faults == 1
    with pytest.raises(ClientError):
        put(client, b"hit\n", stream="t")
    assert fh.pending_faults == 0
    assert fh.stats("s").faults == {}
    assert fh.stats("t").faults == {"http_500": 1}


def test_scripted_faults_are_consumed_in_order_one_per_call(
    fh: LocalFirehose, client: Any,
) -> None:
    fh.script(Fault.http_error(503), Fault.fail_records(1.0), Fault.latency(0.01))
    with pytest.raises(ClientError):
        put(client, b"1\n")
    assert put(client, b"2\n")["FailedPutCount"] == 1
    assert put(client, b"3\n")["FailedPutCount"] == 0
    assert put(client, b"4\n")["FailedPutCount"] == 0
    assert fh.stats("s").faults == {"http_503": 1, "records_service_unavailable": 1, "latency": 1}
    assert fh.delivered_lines("s") == [b"3", b"4"]


def test_invalid_calls_do_not_consume_faults(fh: LocalFirehose, client: Any) -> None:
    fh.script(Fault.http_error(500))
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        put(client, b"x\n", stream="missing")
    assert fh.pending_faults == 1
    fh.clear_faults()
    assert fh.pending_faults == 0


def test_fault_json_round_trip() -> None:
    faults = [
        Fault.fail_records(0.25, code="InternalFailure", stream="s"),
        Fault.fail_records(indices=[0, 3]),
        Fault.http_error(503),
        Fault.latency(1.5, stream="x"),
        Fault.reset_before_store(),
        Fault.reset_after_store(stream="y"),
    ]
    assert [Fault.from_json(orjson.loads(orjson.dumps(f.to_json()))) for f in faults] == faults
    assert faults[2].kind is FaultKind.HTTP_ERROR
    assert faults[2].code == "ServiceUnavailableException"
    with pytest.raises(ValueError, match="record error code"):
        Fault.fail_records(code="Nope")


RATES = FaultRates(
    record_service_unavailable=0.1, record_internal_failure=0.05,
    http_500=0.05, http_503=0.05, reset_before_store=0.04, reset_after_store=0.04,
)


def run_random_faults(tmp_path: Path, seed: int) -> tuple[list[Any], dict[str, int], int]:
    with LocalFirehose(data_dir=tmp_path / str(seed), streams=["s"], quota=UNLIMITED,
                       fault_rates=RATES, seed=seed) as fh:
        client = fh.client(config=NO_RETRIES)
        outcomes: list[Any] = []
        for call in range(60):
            try:
                response = put(client, *[b"%d-%d\n" % (call, i) for i in range(10)])
                outcomes.append(tuple(e.get("ErrorCode", "ok") for e in
                                      response["RequestResponses"]))
            except ClientError as exc:
                outcomes.append(exc.response["Error"]["Code"])
            except ConnectionClosedError:
                outcomes.append("reset")
        stats = fh.stats("s")
        assert stats.throttled_records == stats.throttled_requests == 0
        assert len(fh.delivered_lines("s")) == stats.records_accepted
        return outcomes, dict(stats.faults), stats.records_accepted


def test_random_faults_with_a_seed_are_reproducible(tmp_path: Path) -> None:
    first = run_random_faults(tmp_path / "a", seed=7)
    assert run_random_faults(tmp_path / "b", seed=7) == first
    assert run_random_faults(tmp_path / "c", seed=8) != first
    outcomes, faults, accepted = first
    assert set(faults) >= {"records_service_unavailable", "records_internal_failure"}
    whole_call = sum(faults.get(k, 0) for k in (
        "http_500", "http_503", "reset_before_store", "reset_after_store"))
    assert whole_call == sum(isinstance(o, str) for o in outcomes)
    assert 0 < accepted < 600


def test_random_latency(tmp_path: Path) -> None:
    with LocalFirehose(data_dir=tmp_path, streams=["s"],
                       fault_rates=FaultRates(latency=1.0, latency_seconds=0.2)) as fh:
        client = fh.client(config=NO_RETRIES)
        started = time.monotonic()
        put(client, b"x\n")
        assert time.monotonic() - started >= 0.2
        fh.set_fault_rates(FaultRates())
        put(client, b"y\n")
        assert fh.stats("s").faults == {"latency": 1}


def test_stop_cuts_a_long_latency_fault_short(tmp_path: Path) -> None:
    fh = LocalFirehose(data_dir=tmp_path, streams=["s"]).start()
    fh.script(Fault.latency(60))
    client = fh.client(config=NO_RETRIES)

    def call() -> None:
        # Either answered (the latency ends at stop) or cut off; both are fine here.
        with contextlib.suppress(Exception):
            put(client, b"x\n")

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 10
    while fh.pending_faults:  # wait until the server has picked the fault up
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    fh.stop()
    assert time.monotonic() - started < 10
    caller.join(30)
    assert not caller.is_alive()

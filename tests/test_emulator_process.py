"""The emulator as its own process, its control API, the AWS CLI, and the pytest plugin."""

from __future__ import annotations

import importlib.metadata
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from firehose_buffer.emulator import EmulatorControl, Fault, FaultRates, LocalFirehose
from firehose_buffer.quota import Quota

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
NO_RETRIES = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30)


def child_env() -> dict[str, str]:
    """The environment for child processes: the repo importable, AWS pointed nowhere real."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(REPO / "nonexistent-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(REPO / "nonexistent-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.pop("AWS_PROFILE", None)
    return env


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the emulator printed nothing in time"
    return proc.stdout.readline()


def firehose_client(endpoint_url: str) -> Any:
    return boto3.client("firehose", endpoint_url=endpoint_url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=NO_RETRIES)


def test_module_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firehose_buffer.emulator", "--port", "0",
         "--data-dir", str(tmp_path), "--streams", "a,b", "--quota", "high",
         "--records-per-second", "3", "--buffer-seconds", "3600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=REPO,
    )
    try:
        line = read_line(proc, timeout=30)
        assert line.startswith("listening on http://127.0.0.1:")
        endpoint = line.split()[-1]
        assert int(endpoint.rsplit(":", 1)[1]) > 0

        client = firehose_client(endpoint)
        assert client.list_delivery_streams()["DeliveryStreamNames"] == ["a", "b"]
        response = client.put_record_batch(
            DeliveryStreamName="a", Records=[{"Data": b"%d\n" % i} for i in range(5)]
        )
        assert response["FailedPutCount"] == 2  # --records-per-second 3 overrides the preset

        control = EmulatorControl(endpoint)
        assert control.health()
        stats = control.stats("a")
        assert (stats.records_accepted, stats.throttled_records) == (3, 2)
        control.set_quota(Quota.HIGH, stream="a")
        control.script(Fault.http_error(503, stream="a"))
        with pytest.raises(ClientError) as exc:
            client.put_record_batch(DeliveryStreamName="a", Records=[{"Data": b"x\n"}])
        assert exc.value.response["Error"]["Code"] == "ServiceUnavailableException"
        client.put_record_batch(DeliveryStreamName="a", Records=[{"Data": b"5\n"}])
        assert control.stats().faults == {"http_503": 1}
        assert control.stats("a").records_accepted == 4

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Pending records were written at stop, in the Firehose layout.
    (path,) = [p for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert path.name.startswith("a-1-")
    assert path.read_bytes() == b"0\n1\n2\n5\n"


def test_module_process_stops_on_sigint(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firehose_buffer.emulator", "--port", "0",
         "--fault-rates", "http_500=0.5", "--seed", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=REPO,
    )
    try:
        assert read_line(proc, timeout=30).startswith("listening on ")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_control_api_in_process(tmp_path: Path) -> None:
    with LocalFirehose(data_dir=tmp_path, buffer_seconds=3600) as fh:
        control = EmulatorControl(fh.endpoint_url)
        control.create_stream("c", quota=Quota(10, 1e6, 2))
        client = fh.client(config=NO_RETRIES)
        response = client.put_record_batch(DeliveryStreamName="c",
                                           Records=[{"Data": b"c\n"}] * 3)
        assert response["FailedPutCount"] == 1
        control.set_fault_rates(FaultRates(record_internal_failure=1.0), seed=1)
        response = client.put_record_batch(DeliveryStreamName="c", Records=[{"Data": b"d\n"}])
        assert response["RequestResponses"][0]["ErrorCode"] == "InternalFailure"
        control.clear_faults()
        assert fh.pending_faults == 0
        files = control.flush()
        assert [p.read_bytes() for p in files["c"]] == [b"c\nc\n"]
        assert control.files("c") == files["c"]
        stats = control.stats("c")
        assert stats == fh.stats("c")
        assert stats.faults == {"records_internal_failure": 1}
        with pytest.raises(RuntimeError, match="404"):
            control._call("POST", "nope", {})
        control.create_stream("z", file_extension=".jsonl.zst")
        client.put_record(DeliveryStreamName="z", Record={"Data": b"z\n"})
        assert [p.name.endswith(".jsonl.zst") for p in control.flush()["z"]] == [True]


def test_aws_cli_creates_a_stream_and_puts_records(tmp_path: Path) -> None:
    aws = Path(sys.executable).parent / "aws"
    if not aws.exists():
        pytest.skip(f"the AWS CLI is not installed next to the interpreter ({aws})")
    with LocalFirehose(data_dir=tmp_path, buffer_seconds=3600) as fh:
        def cli(*args: str) -> dict[str, Any]:
            done = subprocess.run(
                [str(aws), "--endpoint-url", fh.endpoint_url, "--output", "json",
                 "firehose", *args],
                capture_output=True, text=True, env=child_env(), timeout=60, check=False,
            )
            assert done.returncode == 0, done.stderr
            result: dict[str, Any] = orjson.loads(done.stdout)
            return result

        created = cli("create-delivery-stream", "--delivery-stream-name", "x")
        assert created["DeliveryStreamARN"].endswith(":deliverystream/x")
        # CLI v1 takes Data as text and base64-encodes it for the wire itself (it has no
        # --cli-binary-format); JSON escapes give the records their newlines.
        records = orjson.dumps([{"Data": '{"n":1}\n'}, {"Data": '{"n":2}\n'}]).decode()
        response = cli("put-record-batch", "--delivery-stream-name", "x", "--records", records)
        assert response["FailedPutCount"] == 0
        assert len(response["RequestResponses"]) == 2
        described = cli("describe-delivery-stream", "--delivery-stream-name", "x")
        assert described["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE"
        assert fh.delivered_lines("x") == [b'{"n":1}', b'{"n":2}']


PLUGIN_TEST = '''
def test_fixture(local_firehose):
    local_firehose.create_stream("p")
    client = local_firehose.client()
    client.put_record_batch(DeliveryStreamName="p", Records=[{"Data": b"plugged\\n"}])
    assert local_firehose.accepted_records("p") == [b"plugged\\n"]
    assert local_firehose.delivered_lines("p") == [b"plugged"]
    assert local_firehose.data_dir.name == "firehose"
'''


def test_pytest_plugin_fixture(tmp_path: Path) -> None:
    (tmp_path / "test_plugin_use.py").write_text(PLUGIN_TEST)
    installed = any(
        ep.value == "firehose_buffer.emulator.pytest_plugin"
        for ep in importlib.metadata.entry_points(group="pytest11")
    )
    # Once installed, the pytest11 entry point loads the plugin; before, name it with -p.
    load = [] if installed else ["-p", "firehose_buffer.emulator.pytest_plugin"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *load,
         str(tmp_path / "test_plugin_use.py")],
        capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout

"""The send, provision and status commands over real HTTP: moto's server (control plane and
S3 delivery) and the local emulator (faults), in-process and as a real subprocess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firehose_buffer import Quota, cli
from firehose_buffer.cli.status import streams_needed
from firehose_buffer.emulator import Fault, LocalFirehose

pytestmark = pytest.mark.slow
BUCKET = "cli-events"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture(scope="module")
def role_arn(moto_url: str) -> str:
    iam = boto3.client("iam", endpoint_url=moto_url, region_name="us-east-1")
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "firehose.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}
    arn: str = iam.create_role(RoleName="firehose-delivery",
                               AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    return arn


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _lines(n: int, run: str) -> list[bytes]:
    return [orjson.dumps({"run": run, "i": i, "pad": "y" * (i % 50)}) for i in range(n)]


def test_provision_is_idempotent_and_a_subprocess_send_lands_in_s3(
    moto_url: str, role_arn: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ("provision", "--stream", "orders", "--shards", "3", "--endpoint-url", moto_url,
            "--region", "us-east-1", "--bucket-arn", f"arn:aws:s3:::{BUCKET}",
            "--role-arn", role_arn, "--prefix", "orders/", "--compression", "GZIP",
            "--buffer-mib", "32", "--buffer-seconds", "120")
    code, out, err = _main(capsys, *args)
    assert code == 0, err
    assert out.count("created") == 3
    assert "3 streams ACTIVE" in out
    code, out, err = _main(capsys, *args)
    assert code == 0, err
    assert out.count("exists") == 3
    assert "created" not in out
    assert err == ""  # same plan: no differences reported

    firehose = boto3.client("firehose", endpoint_url=moto_url, region_name="us-east-1")
    names = firehose.list_delivery_streams(Limit=100)["DeliveryStreamNames"]
    assert sorted(n for n in names if n.startswith("orders-")) == ["orders-0", "orders-1",
                                                                   "orders-2"]
    d = firehose.describe_delivery_stream(DeliveryStreamName="orders-1")
    s3 = d["DeliveryStreamDescription"]["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert s3["FileExtension"] == ".jsonl.gz"
    assert s3["BufferingHints"] == {"SizeInMBs": 32, "IntervalInSeconds": 120}
    assert s3["CompressionFormat"] == "GZIP"
    assert s3["CloudWatchLoggingOptions"]["Enabled"] is True
    logs = boto3.client("logs", endpoint_url=moto_url, region_name="us-east-1")
    group = s3["CloudWatchLoggingOptions"]["LogGroupName"]
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert [s["logStreamName"] for s in streams] == [
        s3["CloudWatchLoggingOptions"]["LogStreamName"]]

    # A changed plan is reported, not applied.
    code, out, err = _main(capsys, *args[:-4], "--buffer-mib", "64", "--buffer-seconds", "120")
    assert code == 0
    assert err.count("BufferingHints") == 3

    # send, as a real process, configured by the environment only.
    lines = _lines(2000, "sub")
    env = {**os.environ, "FIREHOSE_BUFFER_STREAM": "orders", "FIREHOSE_BUFFER_SHARDS": "3",
           "FIREHOSE_BUFFER_ENDPOINT_URL": moto_url, "FIREHOSE_BUFFER_REGION": "us-east-1",
           "FIREHOSE_BUFFER_LINGER_SECONDS": "0.05"}
    result = subprocess.run(
        [sys.executable, "-m", "firehose_buffer.cli", "send"],
        input=b"\n".join(lines) + b"\n", env=env, cwd=ROOT, capture_output=True, timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"2,000 of 2,000 events delivered" in result.stderr
    assert b"Traceback" not in result.stderr
    # moto writes each PutRecordBatch as one object of the records' raw bytes.
    s3client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    landed: list[bytes] = []
    for obj in s3client.list_objects_v2(Bucket=BUCKET, Prefix="orders/")["Contents"]:
        body = s3client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
        landed.extend(body.splitlines())
    assert Counter(landed) == Counter(lines)


def test_provision_dry_run_prints_the_plan_and_calls_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Port 9 (discard) on 127.0.0.1 refuses connections: any call would fail with exit 2.
    code, out, err = _main(
        capsys, "provision", "--streams", "a,b", "--dry-run", "--endpoint-url",
        "http://127.0.0.1:9", "--bucket-arn", "arn:aws:s3:::bkt",
        "--role-arn", "arn:aws:iam::123456789012:role/r", "--prefix", "x/!{timestamp:yyyy}/",
    )
    assert code == 0, err
    plan = json.loads(out)
    assert [p["DeliveryStreamName"] for p in plan] == ["a", "b"]
    s3 = plan[0]["ExtendedS3DestinationConfiguration"]
    assert s3["FileExtension"] == ".jsonl"
    assert s3["BucketARN"] == "arn:aws:s3:::bkt"
    assert "!{firehose:error-output-type}" in s3["ErrorOutputPrefix"]  # required by Firehose


def test_send_bad_lines_skip_or_fail_with_their_line_numbers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = _lines(50, "bad")
    path = tmp_path / "in.jsonl"
    body = [*good[:10], b"not json", *good[10:20], b"[1, 2]", b"", *good[20:]]
    path.write_bytes(b"\n".join(body) + b"\n")
    with LocalFirehose(streams=["bl"], keep_records=True) as fh:
        common = ("send", "--streams", "bl", "--endpoint-url", fh.endpoint_url,
                  "--region", "us-east-1", "--linger-seconds", "0.05", str(path))
        code, _, err = _main(capsys, *common, "--on-bad-line", "skip")
        assert code == 0, err
        assert f"{path}:11: not JSON" in err
        assert f"{path}:22: not a JSON object but a list" in err
        assert "2 bad lines skipped" in err
        assert sorted(fh.delivered_lines("bl")) == sorted(good)

        code, _, err = _main(capsys, *common)  # --on-bad-line fail is the default
        assert code == 1
        assert f"{path}:11: not JSON" in err
        assert "--on-bad-line skip" in err
        delivered = fh.delivered_lines("bl")
    # The second run stopped at line 11: the ten lines before it were sent, nothing after.
    assert Counter(delivered) == Counter(good) + Counter(good[:10])


def test_send_says_how_many_events_failed(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _lines(400, "fail")
    with LocalFirehose(streams=["fl"], keep_records=True) as fh:
        fh.script(Fault.http_error(400, code="InvalidArgumentException"))
        stdin = _Stdin(b"\n".join(lines) + b"\n")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "stdin", stdin)
            code, _, err = _main(capsys, "send", "--streams", "fl", "--endpoint-url",
                                 fh.endpoint_url, "--region", "us-east-1")
        accepted = len(fh.delivered_lines("fl"))
    assert code == 1
    failed = len(lines) - accepted
    assert failed > 0
    assert f"{failed:,} of {len(lines):,} events failed ({failed:,} InvalidArgumentException" \
        in err


def test_send_progress_while_delivery_is_slow(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _lines(3000, "slow")
    with LocalFirehose(streams=["sl"]) as fh:
        fh.script(*[Fault.latency(0.3) for _ in range(4)])
        # A small buffer so reading waits for delivery and the run takes a while.
        monkeypatch.setenv("FIREHOSE_BUFFER_MAX_RECORD_BYTES", "10240")
        monkeypatch.setenv("FIREHOSE_BUFFER_MAX_BUFFER_BYTES", "20480")
        monkeypatch.setattr(sys, "stdin", _Stdin(b"\n".join(lines) + b"\n"))
        code, _, err = _main(capsys, "send", "--streams", "sl", "--endpoint-url",
                             fh.endpoint_url, "--region", "us-east-1",
                             "--progress-seconds", "0.1")
    assert code == 0, err
    assert "lines read" in err
    assert "3,000 of 3,000 events delivered" in err


class _Stdin:
    def __init__(self, data: bytes) -> None:
        import io  # noqa: PLC0415

        self.buffer = io.BytesIO(data)


def test_missing_streams_bad_endpoint_and_no_credentials_are_one_line_errors(
    moto_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    path = tmp_path / "one.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    checks: list[tuple[tuple[str, ...], str]] = [
        (("send", "--streams", "no-such-stream", "--endpoint-url", moto_url, str(path)),
         "provision"),
        (("status", "--streams", "no-such-stream", "--endpoint-url", moto_url), "provision"),
        (("status", "--streams", "x", "--endpoint-url", "http://127.0.0.1:9"),
         "cannot connect"),
        (("provision", "--streams", "x", "--endpoint-url", moto_url, "--bucket-arn",
          "not-an-arn", "--role-arn", "arn:aws:iam::1:role/r"), "S3 bucket ARN"),
        (("status", "--shards", "3", "--endpoint-url", moto_url), "--shards needs --stream"),
    ]
    for argv, hint in checks:
        code, _, err = _main(capsys, *argv)
        assert code == 2, (argv, err)
        assert hint in err, (argv, err)
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"firehose-buffer {argv[0]}: error: "), err
        if argv[0] != "send":  # send also reports what it did before
            assert "\n" not in err.strip(), err
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, _, err = _main(capsys, "status", "--streams", "x", "--endpoint-url", moto_url)
    assert code == 2
    assert "no usable AWS credentials" in err
    assert "Traceback" not in err


def test_status_prints_quota_and_streams_needed(
    moto_url: str, role_arn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _main(capsys, "provision", "--stream", "st", "--shards", "2",
                         "--endpoint-url", moto_url, "--bucket-arn", f"arn:aws:s3:::{BUCKET}",
                         "--role-arn", role_arn, "--no-error-logging")
    assert code == 0, err
    code, out, err = _main(capsys, "status", "--stream", "st", "--shards", "2",
                           "--endpoint-url", moto_url, "--region", "us-east-1",
                           "--peak-mb-per-second", "12", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [s["status"] for s in report["streams"]] == ["ACTIVE", "ACTIVE"]
    assert report["streams"][0]["destination"]["file_extension"] == ".jsonl"
    # us-east-1's default quota is the high one.
    assert report["quota"]["bytes_per_second"] == Quota.HIGH.bytes_per_second
    want = math.ceil(12e6 / (0.8 * Quota.HIGH.bytes_per_second))
    assert report["sizing"]["streams_needed"] == want
    code, out, err = _main(capsys, "status", "--stream", "st", "--shards", "2",
                           "--endpoint-url", moto_url, "--region", "us-east-1",
                           "--quota", "standard", "--peak-mb-per-second", "12")
    assert code == 0, err
    want = math.ceil(12e6 / (0.8 * Quota.STANDARD.bytes_per_second))
    assert f"needs {want} streams" in out
    assert f"configured: 2 ({want - 2} more needed)" in out
    assert "1 MiB/s" in out


@settings(max_examples=200, deadline=None)
@given(peak=st.floats(min_value=1.0, max_value=1e10), headroom=st.floats(0.05, 1.0),
       quota=st.sampled_from([Quota.STANDARD, Quota.HIGH]))
def test_streams_needed_is_the_fewest_that_carry_the_peak(
    peak: float, headroom: float, quota: Quota
) -> None:
    n = streams_needed(peak, quota, headroom)
    per_stream = quota.bytes_per_second * headroom
    assert n * per_stream >= peak * (1 - 1e-9)
    assert n == 1 or (n - 1) * per_stream < peak


@pytest.mark.parametrize("command", ["send", "provision", "status"])
def test_help_has_examples_and_connection_options(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"firehose-buffer {command}" in out.split("examples:")[1]
    assert "--endpoint-url" in out
    assert "--region" in out


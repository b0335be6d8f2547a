"""provision --alarms, status --metrics and the compressed-records settings, over real HTTP
against moto's server (CloudWatch, Firehose), plus properties of the pure parts.

moto stores alarms (metric math included) and answers GetMetricData from the data points put
into it, but evaluates no alarm and computes no metric-math expression: those parts are checked
here on the requests (and the expression's arithmetic in Python), not on CloudWatch's verdicts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.session import get_session
from botocore.validate import ParamValidator
from hypothesis import given, settings
from hypothesis import strategies as st

from firehose_buffer import cli
from firehose_buffer.cli import alarms
from firehose_buffer.cli.record_compression import compression_problems

pytestmark = pytest.mark.slow
REGION = "us-east-1"
BUCKET_ARN = "arn:aws:s3:::monitoring-events"
TOPIC = "arn:aws:sns:us-east-1:123456789012:pipeline-alerts"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def role_arn(moto_url: str) -> str:
    iam = boto3.client("iam", endpoint_url=moto_url, region_name=REGION)
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "firehose.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}
    arn: str = iam.create_role(RoleName="monitoring-delivery",
                               AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    return arn


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _client(service: str, url: str) -> Any:
    return boto3.client(service, endpoint_url=url, region_name=REGION)


def _alarms(url: str, stream: str) -> dict[str, dict[str, Any]]:
    found = _client("cloudwatch", url).describe_alarms(AlarmNamePrefix=stream + "-",
                                                         MaxRecords=100)["MetricAlarms"]
    return {a["AlarmName"].removeprefix(stream + "-"): a for a in found}


def _provision(url: str, role: str, stream: str, *extra: str) -> tuple[str, ...]:
    return ("provision", "--stream", stream, "--shards", "2", "--endpoint-url", url,
            "--region", REGION, "--bucket-arn", BUCKET_ARN, "--role-arn", role,
            "--no-error-logging", *extra)


def test_provision_alarms_are_the_recommended_ones_and_a_rerun_changes_nothing(
    moto_url: str, role_arn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _provision(moto_url, role_arn, "mon-a", "--buffer-seconds", "120", "--alarms",
                      "--alarm-topic-arn", TOPIC, "--alarm-quota-share", "0.75")
    code, out, err = _main(capsys, *args)
    assert code == 0, err
    assert "alarms   mon-a-0: 6 created" in out
    assert "alarms   mon-a-1: 6 created" in out

    for stream in ("mon-a-0", "mon-a-1"):
        found = _alarms(moto_url, stream)
        assert sorted(found) == sorted(alarms.SUFFIXES)
        dims = [{"Name": "DeliveryStreamName", "Value": stream}]
        for alarm in found.values():
            assert alarm["AlarmActions"] == [TOPIC]
            assert alarm["OKActions"] == [TOPIC]
            assert alarm["TreatMissingData"] == "notBreaching"
            assert alarm["ActionsEnabled"] is True

        throttled = found["throttled-records"]
        assert (throttled["Namespace"], throttled["MetricName"], throttled["Statistic"]) == \
            ("AWS/Firehose", "ThrottledRecords", "Sum")
        assert throttled["Dimensions"] == dims
        assert (throttled["Threshold"], throttled["ComparisonOperator"]) == \
            (0.0, "GreaterThanThreshold")
        assert (throttled["Period"], throttled["EvaluationPeriods"],
                throttled["DatapointsToAlarm"]) == (60, 5, 3)

        for suffix, incoming, limit in (
            ("incoming-bytes-quota", "IncomingBytes", "BytesPerSecondLimit"),
            ("incoming-records-quota", "IncomingRecords", "RecordsPerSecondLimit"),
            ("incoming-put-requests-quota", "IncomingPutRequests", "PutRequestsPerSecondLimit"),
        ):
            alarm = found[suffix]
            assert (alarm["Threshold"], alarm["ComparisonOperator"]) == \
                (75.0, "GreaterThanThreshold")
            queries = {q["Id"]: q for q in alarm["Metrics"]}
            returned = [q for q in alarm["Metrics"] if q["ReturnData"]]
            assert [q["Id"] for q in returned] == ["share"]
            stats = {q["MetricStat"]["Metric"]["MetricName"]: q for q in queries.values()
                     if "MetricStat" in q}
            assert set(stats) == {incoming, limit}
            for query in stats.values():
                assert query["MetricStat"]["Metric"]["Namespace"] == "AWS/Firehose"
                assert query["MetricStat"]["Metric"]["Dimensions"] == dims
                assert query["MetricStat"]["Period"] == 300
            assert stats[incoming]["MetricStat"]["Stat"] == "Sum"
            # CloudWatch computes the expression; moto does not. Its arithmetic, in Python:
            # a five-minute sum at 75% of the per-second limit is exactly the threshold.
            per_second_limit = 5 * MIB
            values = {stats[incoming]["Id"]: 0.75 * per_second_limit * 300,
                      stats[limit]["Id"]: per_second_limit}
            assert eval(returned[0]["Expression"], {}, values) == pytest.approx(75.0)

        freshness = found["data-freshness"]
        assert (freshness["MetricName"], freshness["Statistic"]) == \
            ("DeliveryToS3.DataFreshness", "Maximum")
        assert freshness["Threshold"] == 120 + alarms.FRESHNESS_MARGIN_SECONDS
        assert freshness["ComparisonOperator"] == "GreaterThanThreshold"
        success = found["delivery-success"]
        assert (success["MetricName"], success["Statistic"]) == \
            ("DeliveryToS3.Success", "Average")
        assert (success["Threshold"], success["ComparisonOperator"]) == \
            (0.98, "LessThanThreshold")

    def stamps() -> dict[str, object]:
        return {f"{s}-{k}": a["AlarmConfigurationUpdatedTimestamp"]
                for s in ("mon-a-0", "mon-a-1") for k, a in _alarms(moto_url, s).items()}

    before = stamps()
    code, out, err = _main(capsys, *args)
    assert code == 0, err
    assert out.count(": 6 as planned") == 2
    assert "created" not in out
    assert err == ""
    assert stamps() == before  # not one PutMetricAlarm

    # The streams' buffering interval is what the freshness alarm follows: a plan with
    # another interval reports the streams' difference, and the alarms still match them.
    code, out, err = _main(capsys, *_provision(
        moto_url, role_arn, "mon-a", "--buffer-seconds", "300", "--alarms",
        "--alarm-topic-arn", TOPIC, "--alarm-quota-share", "0.75"))
    assert code == 0, err
    assert err.count("BufferingHints") == 2
    assert "alarm " not in err
    assert stamps() == before


def test_an_alarm_that_differs_from_the_plan_is_reported_and_updated_on_request(
    moto_url: str, role_arn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _provision(moto_url, role_arn, "mon-d", "--alarms", "--alarm-topic-arn", TOPIC)
    code, _, err = _main(capsys, *args)
    assert code == 0, err
    cloudwatch = _client("cloudwatch", moto_url)
    edited = dict(_alarms(moto_url, "mon-d-1")["data-freshness"])
    cloudwatch.put_metric_alarm(**{k: edited[k] for k in (
        "AlarmName", "Namespace", "MetricName", "Dimensions", "Statistic", "Period",
        "EvaluationPeriods", "DatapointsToAlarm", "ComparisonOperator", "TreatMissingData")},
        Threshold=5000.0, AlarmActions=[], OKActions=[])

    code, out, err = _main(capsys, *args)
    assert code == 0, err
    assert "alarms   mon-d-0: 6 as planned" in out
    assert "alarms   mon-d-1: 5 as planned, 1 differ" in out
    target = 300 + alarms.FRESHNESS_MARGIN_SECONDS
    assert f"alarm mon-d-1-data-freshness: Threshold is 5000.0, the plan has {float(target)}" \
        in err
    assert "AlarmActions is [], the plan has" in err
    assert "--update-alarms" in err
    assert _alarms(moto_url, "mon-d-1")["data-freshness"]["Threshold"] == 5000.0  # left

    code, out, err = _main(capsys, *args, "--update-alarms")
    assert code == 0, err
    assert "alarms   mon-d-1: 5 as planned, 1 updated" in out
    fixed = _alarms(moto_url, "mon-d-1")["data-freshness"]
    assert fixed["Threshold"] == target
    assert fixed["AlarmActions"] == [TOPIC]
    code, out, err = _main(capsys, *args)
    assert out.count(": 6 as planned") == 2
    assert err == ""

    # A changed plan (another quota share) differs in the three quota alarms of each stream.
    code, out, err = _main(capsys, *args, "--alarm-quota-share", "0.9")
    assert code == 0
    assert out.count("3 as planned, 3 differ") == 2
    assert err.count("Threshold is 80.0, the plan has 90.0") == 6


def test_alarms_dry_run_prints_valid_requests_and_calls_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Port 9 (discard) on 127.0.0.1 refuses connections: any call would fail with exit 2.
    common = ("provision", "--streams", "a,b,c", "--dry-run", "--endpoint-url",
              "http://127.0.0.1:9", "--bucket-arn", "arn:aws:s3:::bkt",
              "--role-arn", "arn:aws:iam::123456789012:role/r", "--alarms")
    code, out, err = _main(capsys, *common, "--buffer-seconds", "900",
                           "--alarm-topic-arn", TOPIC, "--record-compression", "gzip")
    assert code == 0, err
    plan = json.loads(out)
    assert [r["DeliveryStreamName"] for r in plan["CreateDeliveryStream"]] == ["a", "b", "c"]
    s3 = plan["CreateDeliveryStream"][0]["ExtendedS3DestinationConfiguration"]
    assert (s3["CompressionFormat"], s3["FileExtension"]) == ("UNCOMPRESSED", ".jsonl.gz")
    puts = plan["PutMetricAlarm"]
    assert len(puts) == 3 * len(alarms.SUFFIXES)
    assert len({p["AlarmName"] for p in puts}) == len(puts)
    freshness = {p["AlarmName"]: p["Threshold"] for p in puts
                 if p.get("MetricName") == "DeliveryToS3.DataFreshness"}
    assert freshness == {f"{s}-data-freshness": 900.0 + alarms.FRESHNESS_MARGIN_SECONDS
                         for s in "abc"}
    # Each request has the shape botocore's service models require.
    models = get_session()
    for service, operation, requests in (
        ("cloudwatch", "PutMetricAlarm", puts),
        ("firehose", "CreateDeliveryStream", plan["CreateDeliveryStream"]),
    ):
        shape = models.get_service_model(service).operation_model(operation).input_shape
        for request in requests:
            report = ParamValidator().validate(request, shape)
            assert not report.has_errors(), report.generate_report()

    code, out, _ = _main(capsys, *common, "--freshness-seconds", "3600")
    assert code == 0
    assert {p["Threshold"] for p in json.loads(out)["PutMetricAlarm"]
            if p.get("MetricName") == "DeliveryToS3.DataFreshness"} == {3600.0}
    for bad, hint in ((("--freshness-seconds", "3601"), "within the hour"),
                      (("--alarm-quota-share", "1.5"), "--alarm-quota-share"),
                      (("--alarm-topic-arn", "alerts"), "not an ARN"),
                      (("--record-compression", "zstd", "--compression", "GZIP"),
                       "compress the compressed records again")):
        code, out, err = _main(capsys, *common, *bad)
        assert code == 2, bad
        assert hint in err, err
        assert out == ""
    no_alarms = [a for a in common if a != "--alarms"]
    for bad, hint in ((("--alarm-topic-arn", TOPIC), "--alarm-topic-arn needs --alarms"),
                      (("--freshness-seconds", "600"), "--freshness-seconds needs --alarms"),
                      (("--update-alarms",), "--update-alarms needs --alarms")):
        code, out, err = _main(capsys, *no_alarms, *bad)
        assert code == 2, bad
        assert hint in err, err
        assert out == ""


@settings(max_examples=200, deadline=None)
@given(interval=st.integers(0, 900))
def test_freshness_target_is_above_the_interval_and_within_the_hour(interval: int) -> None:
    target = alarms.freshness_target(interval)
    assert interval < target <= alarms.FRESHNESS_WINDOW_SECONDS


_NAME = st.text("abcxyz019-_.", min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(first=_NAME, second=_NAME)
def test_alarm_names_start_with_their_stream_and_never_collide(first: str,
                                                               second: str) -> None:
    plan = alarms.AlarmSettings()
    a = [r["AlarmName"] for r in alarms.plan_alarms(first, 300, plan)]
    b = [r["AlarmName"] for r in alarms.plan_alarms(second, 300, plan)]
    assert all(name.startswith(first + "-") for name in a)
    assert len(set(a)) == len(alarms.SUFFIXES)
    if first != second:
        assert not set(a) & set(b)


# --- status --metrics ------------------------------------------------------------------


def _put_minutes(url: str, stream: str, per_minute: dict[str, dict[int, float]]) -> None:
    """Put one data point per minute: metric -> {minutes ago: value}."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    dims = [{"Name": "DeliveryStreamName", "Value": stream}]
    data = [{"MetricName": metric, "Dimensions": dims, "Value": value,
             "Timestamp": now - timedelta(minutes=ago)}
            for metric, points in per_minute.items() for ago, value in points.items()]
    cloudwatch = _client("cloudwatch", url)
    for start in range(0, len(data), 500):
        cloudwatch.put_metric_data(Namespace="AWS/Firehose", MetricData=data[start:start + 500])


def _traffic(bytes_per_minute: dict[int, float], limit_bytes: float) -> dict[str, dict[int, float]]:
    # Minutes 2-50 ago: inside the last hour even if the clock turns a minute during the test.
    return {
        "IncomingBytes": bytes_per_minute,
        "IncomingRecords": {m: b / 5000 for m, b in bytes_per_minute.items()},
        "IncomingPutRequests": {m: b / 1e6 for m, b in bytes_per_minute.items()},
        "BytesPerSecondLimit": dict.fromkeys(bytes_per_minute, limit_bytes),
        "RecordsPerSecondLimit": dict.fromkeys(bytes_per_minute, 100_000.0),
        "PutRequestsPerSecondLimit": dict.fromkeys(bytes_per_minute, 1_000.0),
    }


def test_status_metrics_shows_the_busiest_minute_and_the_streams_it_needs(
    moto_url: str, role_arn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _main(capsys, "provision", "--stream", "mon-m", "--shards", "3",
                         "--endpoint-url", moto_url, "--bucket-arn", BUCKET_ARN,
                         "--role-arn", role_arn, "--no-error-logging")
    assert code == 0, err
    limit = float(MIB)  # a standard quota, published: us-east-1's assumed one is 5 MiB/s
    busy = {m: 30e6 for m in range(2, 51)} | {10: 60e6}
    steady = {m: 45e6 for m in range(2, 51)} | {20: 50e6}
    _put_minutes(moto_url, "mon-m-0", _traffic(busy, limit) | {
        "ThrottledRecords": {10: 7.0, 11: 5.0, 30: 0.0},
        "DeliveryToS3.DataFreshness": {m: 100.0 + m for m in range(2, 51)},
        "DeliveryToS3.Success": {m: 1.0 for m in range(2, 51)} | {12: 0.9},
    })
    _put_minutes(moto_url, "mon-m-1", _traffic(steady, limit) | {
        "DeliveryToS3.DataFreshness": {5: 700.0, 6: 40.0},
        "DeliveryToS3.Success": {5: 1.0},
    })
    argv = ("status", "--stream", "mon-m", "--shards", "3", "--endpoint-url", moto_url,
            "--region", REGION, "--metrics")
    code, out, err = _main(capsys, *argv, "--json")
    assert code == 0, err
    report = json.loads(out)
    rows = {r["name"]: r["metrics"] for r in report["streams"]}
    assert rows["mon-m-0"]["bytes"]["peak_per_second"] == pytest.approx(60e6 / 60)
    assert rows["mon-m-0"]["bytes"]["share"] == pytest.approx(60e6 / 60 / limit)
    assert rows["mon-m-1"]["bytes"]["peak_per_second"] == pytest.approx(50e6 / 60)
    assert rows["mon-m-0"]["records"]["peak_per_second"] == pytest.approx(60e6 / 5000 / 60)
    assert rows["mon-m-0"]["records"]["limit"] == 100_000.0
    assert rows["mon-m-1"]["requests"]["peak_per_second"] == pytest.approx(50 / 60)
    assert rows["mon-m-0"]["throttled_records"] == 12.0
    assert rows["mon-m-1"]["throttled_records"] is None
    assert rows["mon-m-0"]["freshness_max_seconds"] == 150.0
    assert rows["mon-m-1"]["freshness_max_seconds"] == 700.0
    assert rows["mon-m-0"]["success_min"] == pytest.approx(0.9)
    assert rows["mon-m-2"]["bytes"]["peak_per_second"] is None  # no traffic

    observed = report["observed"]
    # Together the streams were busiest at mon-m-0's peak: 60 + 45 MB in that minute.
    together = (60e6 + 45e6) / 60
    assert observed["peak"]["bytes"]["per_second"] == pytest.approx(together)
    assert rows["mon-m-0"]["bytes"]["peak_at"] == observed["peak"]["bytes"]["at"]
    assert observed["limits_published"] is True
    assert observed["limits_per_stream"]["bytes_per_second"] == limit
    need = math.ceil(together / (0.8 * limit))
    assert observed["streams_needed"] == need == 3
    assert observed["throttled_records"] == 12.0

    code, out, err = _main(capsys, *argv, "--headroom", "0.5")
    assert code == 0, err
    # The metrics table comes after the configuration table: its rows win.
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("mon-m-")}
    assert "1.00 MB (95%)" in lines["mon-m-0"]
    assert "90.0%" in lines["mon-m-0"]
    assert "700 s" in lines["mon-m-1"]
    want = math.ceil(together / (0.5 * limit))
    assert f"the observed peak needs {want} streams at 50% of 1 MiB/s" in out
    assert f"configured: 3 ({want - 3} more needed)" in out
    assert "the demand was higher" in out  # records were throttled
    assert "no traffic published in the last hour: mon-m-2" in out


def test_status_metrics_assumes_the_quota_where_no_limit_was_published(
    moto_url: str, role_arn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _main(capsys, "provision", "--streams", "mon-q", "--endpoint-url", moto_url,
                         "--bucket-arn", BUCKET_ARN, "--role-arn", role_arn,
                         "--no-error-logging")
    assert code == 0, err
    _put_minutes(moto_url, "mon-q", {"IncomingBytes": {3: 3e8, 4: 1e8}})
    code, out, err = _main(capsys, "status", "--streams", "mon-q", "--endpoint-url", moto_url,
                           "--region", REGION, "--metrics", "--quota", "high", "--json")
    assert code == 0, err
    observed = json.loads(out)["observed"]
    assert observed["limits_published"] is False
    assert observed["limits_per_stream"]["bytes_per_second"] == 5 * MIB
    assert observed["streams_needed"] == math.ceil(3e8 / 60 / (0.8 * 5 * MIB))


# --- compressed records -----------------------------------------------------------------


def test_provision_and_status_for_compressed_records(
    moto_url: str, role_arn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _main(capsys, *_provision(moto_url, role_arn, "mon-z",
                                               "--record-compression", "zstd"))
    assert code == 0, err
    firehose = _client("firehose", moto_url)
    for name in ("mon-z-0", "mon-z-1"):
        d = firehose.describe_delivery_stream(DeliveryStreamName=name)
        s3 = d["DeliveryStreamDescription"]["Destinations"][0]["ExtendedS3DestinationDescription"]
        assert (s3["CompressionFormat"], s3["FileExtension"]) == ("UNCOMPRESSED", ".jsonl.zst")

    status = ("status", "--endpoint-url", moto_url, "--region", REGION)
    code, out, err = _main(capsys, *status, "--stream", "mon-z", "--shards", "2",
                           "--record-compression", "zstd")
    assert (code, err) == (0, "")
    assert "zstd-compressed records: every stream delivers them as they are" in out
    code, out, err = _main(capsys, *status, "--stream", "mon-z", "--shards", "2",
                           "--record-compression", "gzip")
    assert code == 1
    assert err.count("FileExtension is .jsonl.zst") == 2

    s3 = {"RoleARN": role_arn, "BucketARN": BUCKET_ARN}
    firehose.create_delivery_stream(
        DeliveryStreamName="mon-z-bad", DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            **s3, "CompressionFormat": "GZIP", "FileExtension": ".jsonl.zst",
            "ProcessingConfiguration": {"Enabled": True, "Processors": [
                {"Type": "AppendDelimiterToRecord", "Parameters": []},
                {"Type": "Lambda", "Parameters": [{
                    "ParameterName": "LambdaArn",
                    "ParameterValue": "arn:aws:lambda:us-east-1:123456789012:function:f"}]},
            ]},
            "DynamicPartitioningConfiguration": {"Enabled": True},
            "DataFormatConversionConfiguration": {
                "SchemaConfiguration": {"RoleARN": role_arn, "DatabaseName": "d",
                                        "TableName": "t"},
                "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
                "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {}}}},
        })
    firehose.create_delivery_stream(
        DeliveryStreamName="mon-z-http", DeliveryStreamType="DirectPut",
        HttpEndpointDestinationConfiguration={
            "EndpointConfiguration": {"Url": "https://collector.example/ingest"},
            "S3Configuration": s3})
    code, out, err = _main(capsys, *status, "--streams", "mon-z-0,mon-z-bad,mon-z-http",
                           "--record-compression", "zstd", "--json")
    assert code == 1
    problems = {r["name"]: r["compression_problems"] for r in json.loads(out)["streams"]}
    assert problems["mon-z-0"] == []
    text = " | ".join(problems["mon-z-bad"])
    for hint in ("CompressionFormat is GZIP", "AppendDelimiterToRecord", "Lambda processor",
                 "dynamic partitioning", "data format conversion"):
        assert hint in text, text
    assert "FileExtension" not in text  # .jsonl.zst is right for zstd
    assert len(problems["mon-z-http"]) == 1
    assert "HttpEndpoint" in problems["mon-z-http"][0]
    assert "2 of 3 streams would break zstd-compressed records: mon-z-bad, mon-z-http" in err
    # Without a codec to check, the same streams are fine by status.
    code, _, err = _main(capsys, *status, "--streams", "mon-z-bad,mon-z-http")
    assert (code, err) == (0, "")
    # provision on an existing stream reports what breaks compressed records.
    code, _, err = _main(capsys, "provision", "--streams", "mon-z-bad", "--endpoint-url",
                         moto_url, "--bucket-arn", BUCKET_ARN, "--role-arn", role_arn,
                         "--no-error-logging", "--record-compression", "zstd")
    assert code == 0
    assert "mon-z-bad: breaks zstd records: the AppendDelimiterToRecord processor" in err


_PROCESSORS = ("AppendDelimiterToRecord", "Lambda", "RecordDeAggregation", "MetadataExtraction")


_SETTINGS = st.fixed_dictionaries({
    "codec": st.sampled_from(["zstd", "gzip"]),
    "compression": st.sampled_from(["UNCOMPRESSED", "GZIP", "Snappy", None]),
    "processors": st.lists(st.sampled_from(_PROCESSORS), unique=True, max_size=3),
    "processing_enabled": st.booleans(),
    "partitioning": st.booleans(),
    "conversion": st.booleans(),
    "extension": st.sampled_from([".jsonl.zst", ".jsonl.gz", ".jsonl", None]),
})


@settings(max_examples=200, deadline=None)
@given(case=_SETTINGS)
def test_each_setting_that_breaks_compressed_records_is_named(case: dict[str, Any]) -> None:
    s3: dict[str, Any] = {"BucketARN": BUCKET_ARN}
    compression, extension, processors = case["compression"], case["extension"], \
        case["processors"]
    if compression:
        s3["CompressionFormat"] = compression
    if extension:
        s3["FileExtension"] = extension
    if processors:
        s3["ProcessingConfiguration"] = {
            "Enabled": case["processing_enabled"],
            "Processors": [{"Type": p, "Parameters": []} for p in processors]}
    s3["DynamicPartitioningConfiguration"] = {"Enabled": case["partitioning"]}
    if case["conversion"]:
        s3["DataFormatConversionConfiguration"] = {"Enabled": True}
    problems = compression_problems(
        {"Destinations": [{"ExtendedS3DestinationDescription": s3}]}, case["codec"])
    compressed_again = compression not in (None, "UNCOMPRESSED")
    processed = processors if case["processing_enabled"] else []
    wrong_extension = not (extension or "").endswith(
        ".zst" if case["codec"] == "zstd" else ".gz")
    assert len(problems) == compressed_again + len(processed) + case["partitioning"] + \
        case["conversion"] + wrong_extension
    assert any("CompressionFormat" in p for p in problems) == compressed_again
    assert any("FileExtension" in p for p in problems) == wrong_extension
    names = {"AppendDelimiterToRecord": "AppendDelimiterToRecord", "Lambda": "Lambda",
             "RecordDeAggregation": "deaggregation", "MetadataExtraction": "metadata extraction"}
    for processor, named in names.items():
        assert any(named in p for p in problems) == (processor in processed)

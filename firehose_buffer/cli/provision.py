"""Create the delivery streams a configuration names, idempotently, and wait until ACTIVE.

Each stream is Direct PUT with an Extended S3 destination writing ".jsonl" objects (".jsonl.gz"
with GZIP...), with the buffering hints, prefix and compression given, and CloudWatch error
logging to /aws/kinesisfirehose/<stream> (log group and stream created if missing). The
records firehose-buffer sends are newline-delimited JSON already, so no transformation
Lambda is needed to add newlines. Streams that exist are left as they are; differences from
the plan are reported. --record-compression zstd|gzip makes streams for compressed records:
UNCOMPRESSED at delivery (the records are compressed already) with a .jsonl.zst/.jsonl.gz
extension.

--alarms also puts CloudWatch alarms on each stream: ThrottledRecords above zero; incoming
bytes, records and put requests above a share of the limits Firehose publishes for the
stream; DeliveryToS3.DataFreshness above a target (default: the buffering interval plus 5
minutes, at most the one-hour window); DeliveryToS3.Success below 0.98. Alarms are named
<stream>-<what>; like streams, existing ones are left as they are and differences reported
(--update-alarms applies the plan to them). --dry-run prints the CreateDeliveryStream (and
PutMetricAlarm) requests and calls nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from botocore.exceptions import ClientError

from . import alarms as alarm_plan
from .common import (
    EXIT_ERROR,
    EXIT_OK,
    CommandError,
    add_connection_options,
    add_stream_options,
    aws_client,
    error,
    explain,
    guarded,
    note,
    streams_from_args,
)
from .record_compression import RECORD_COMPRESSIONS, compression_problems

COMMAND = "provision"
EXAMPLES = """\
examples:
  # see what would be created, without AWS credentials
  firehose-buffer provision --stream events --shards 4 --dry-run \\
      --bucket-arn arn:aws:s3:::my-events --role-arn arn:aws:iam::123456789012:role/firehose

  # create events-0..events-3 writing gzip JSON Lines under events/, 128 MiB or 5 minutes
  firehose-buffer provision --stream events --shards 4 --region us-east-1 \\
      --bucket-arn arn:aws:s3:::my-events --role-arn arn:aws:iam::123456789012:role/firehose \\
      --prefix events/ --compression GZIP --buffer-mib 128 --buffer-seconds 300

  # streams for zstd-compressed records, with alarms that notify an SNS topic
  firehose-buffer provision --stream events --shards 4 --region us-east-1 \\
      --bucket-arn arn:aws:s3:::my-events --role-arn arn:aws:iam::123456789012:role/firehose \\
      --record-compression zstd --alarms \\
      --alarm-topic-arn arn:aws:sns:us-east-1:123456789012:pipeline-alerts
"""
COMPRESSIONS = ("UNCOMPRESSED", "GZIP", "ZIP", "Snappy", "HADOOP_SNAPPY")
_EXTENSIONS = {"UNCOMPRESSED": ".jsonl", "GZIP": ".jsonl.gz", "ZIP": ".jsonl.zip",
               "Snappy": ".jsonl.snappy", "HADOOP_SNAPPY": ".jsonl.snappy"}
#: Firehose requires an error prefix when the prefix uses !{...} expressions.
DEFAULT_ERROR_PREFIX = "errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/"
LOG_STREAM = "DestinationDelivery"
_COMPARED = ("BucketARN", "RoleARN", "Prefix", "CompressionFormat", "FileExtension",
             "BufferingHints")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    add_stream_options(parser)
    add_connection_options(parser)
    dest = parser.add_argument_group("S3 destination")
    dest.add_argument("--bucket-arn", required=True, metavar="ARN",
                      help="arn:aws:s3:::BUCKET the streams write to")
    dest.add_argument("--role-arn", required=True, metavar="ARN",
                      help="IAM role Firehose assumes to write to the bucket (and to the logs)")
    dest.add_argument("--prefix", default=None,
                      help="S3 key prefix, e.g. events/ (Firehose adds YYYY/MM/DD/HH/)")
    dest.add_argument("--error-prefix", default=None,
                      help="S3 key prefix for records Firehose could not deliver "
                           "(default when --prefix has !{...}: " + DEFAULT_ERROR_PREFIX
                           .replace("%", "%%") + ")")
    dest.add_argument("--compression", choices=COMPRESSIONS, default="UNCOMPRESSED",
                      help="object compression (default %(default)s)")
    dest.add_argument("--buffer-mib", type=int, default=64, metavar="MIB",
                      help="write an object when this much has arrived, 1-128 "
                           "(default %(default)s)")
    dest.add_argument("--buffer-seconds", type=int, default=300, metavar="S",
                      help="... or when the oldest record is this old, 0-900 "
                           "(default %(default)s)")
    dest.add_argument("--no-error-logging", action="store_true",
                      help="do not log delivery errors to CloudWatch Logs")
    dest.add_argument("--record-compression", choices=sorted(RECORD_COMPRESSIONS),
                      help="the buffer sends compressed records: deliver them as they are "
                           "(CompressionFormat UNCOMPRESSED) as .jsonl.zst or .jsonl.gz")
    alarms = parser.add_argument_group("CloudWatch alarms")
    alarms.add_argument("--alarms", action="store_true",
                        help="put the recommended alarms on each stream (see above)")
    alarms.add_argument("--alarm-topic-arn", action="append", default=[], metavar="ARN",
                        help="SNS topic (or other alarm action) notified when an alarm fires "
                             "and when it clears; repeat for more (up to 5); default: none")
    alarms.add_argument("--alarm-quota-share", type=float,
                        default=alarm_plan.DEFAULT_QUOTA_SHARE, metavar="FRACTION",
                        help="alarm when 5 minutes of incoming bytes, records or requests "
                             "average above this share of the stream's limit "
                             "(default %(default)s)")
    alarms.add_argument("--freshness-seconds", type=int, metavar="S",
                        help="alarm when the oldest record waits longer than this for S3, "
                             f"at most {alarm_plan.FRESHNESS_WINDOW_SECONDS} (default: the "
                             "buffering interval plus "
                             f"{alarm_plan.FRESHNESS_MARGIN_SECONDS} s)")
    alarms.add_argument("--update-alarms", action="store_true",
                        help="replace existing alarms that differ from the plan (default: "
                             "report them and leave them)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan as CreateDeliveryStream requests (with --alarms: "
                             'a JSON object {"CreateDeliveryStream": [...], '
                             '"PutMetricAlarm": [...]}); call nothing')
    parser.add_argument("--wait-seconds", type=float, default=600.0, metavar="S",
                        help="how long to wait for the streams to become ACTIVE; 0: do not "
                             "wait (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    return guarded(COMMAND, lambda: _run(args))


def log_group(stream: str) -> str:
    """Where the console would put the stream's error logs."""
    return f"/aws/kinesisfirehose/{stream}"


def plan(args: argparse.Namespace, streams: tuple[str, ...]) -> list[dict[str, Any]]:
    """One CreateDeliveryStream request per stream."""
    if not 1 <= args.buffer_mib <= 128:
        raise CommandError("--buffer-mib must be 1 to 128")
    if not 0 <= args.buffer_seconds <= 900:
        raise CommandError("--buffer-seconds must be 0 to 900")
    if not args.bucket_arn.startswith("arn:") or ":s3:::" not in args.bucket_arn:
        raise CommandError(f"--bucket-arn {args.bucket_arn!r} is not an S3 bucket ARN "
                           "(arn:aws:s3:::BUCKET)")
    if not args.role_arn.startswith("arn:") or ":role/" not in args.role_arn:
        raise CommandError(f"--role-arn {args.role_arn!r} is not an IAM role ARN "
                           "(arn:aws:iam::ACCOUNT:role/NAME)")
    compression, extension = args.compression, _EXTENSIONS[args.compression]
    if args.record_compression:
        if args.compression != "UNCOMPRESSED":
            raise CommandError(f"--record-compression {args.record_compression} needs "
                               "--compression UNCOMPRESSED: Firehose would compress the "
                               "compressed records again")
        extension = RECORD_COMPRESSIONS[args.record_compression]
    requests = []
    for name in streams:
        s3: dict[str, Any] = {
            "RoleARN": args.role_arn,
            "BucketARN": args.bucket_arn,
            "BufferingHints": {"SizeInMBs": args.buffer_mib,
                               "IntervalInSeconds": args.buffer_seconds},
            "CompressionFormat": compression,
            "FileExtension": extension,
            "CloudWatchLoggingOptions": (
                {"Enabled": False} if args.no_error_logging else
                {"Enabled": True, "LogGroupName": log_group(name), "LogStreamName": LOG_STREAM}
            ),
        }
        if args.prefix:
            s3["Prefix"] = args.prefix
        error_prefix = args.error_prefix
        if error_prefix is None and args.prefix and "!{" in args.prefix:
            error_prefix = DEFAULT_ERROR_PREFIX
        if error_prefix:
            s3["ErrorOutputPrefix"] = error_prefix
        requests.append({
            "DeliveryStreamName": name,
            "DeliveryStreamType": "DirectPut",
            "ExtendedS3DestinationConfiguration": s3,
            "Tags": [{"Key": "created-by", "Value": "firehose-buffer"}],
        })
    return requests


def alarm_settings(args: argparse.Namespace) -> alarm_plan.AlarmSettings | None:
    """The alarms' settings with --alarms; None without (and no alarm flag given)."""
    if not args.alarms:
        given = [flag for flag, value in (("--alarm-topic-arn", args.alarm_topic_arn),
                                          ("--freshness-seconds", args.freshness_seconds),
                                          ("--update-alarms", args.update_alarms))
                 if value not in (None, False, [])]
        if given:
            raise CommandError(f"{given[0]} needs --alarms")
        return None
    if not 0 < args.alarm_quota_share <= 1:
        raise CommandError("--alarm-quota-share must be in (0, 1]")
    window = alarm_plan.FRESHNESS_WINDOW_SECONDS
    if args.freshness_seconds is not None and not 0 < args.freshness_seconds <= window:
        raise CommandError(f"--freshness-seconds must be 1 to {window}: the pipeline "
                           "promises events in S3 within the hour")
    if len(args.alarm_topic_arn) > 5:
        raise CommandError("--alarm-topic-arn: CloudWatch takes at most 5 actions per alarm")
    for arn in args.alarm_topic_arn:
        if not arn.startswith("arn:"):
            raise CommandError(f"--alarm-topic-arn {arn!r} is not an ARN "
                               "(arn:aws:sns:REGION:ACCOUNT:TOPIC)")
    return alarm_plan.AlarmSettings(tuple(args.alarm_topic_arn), args.alarm_quota_share,
                                    args.freshness_seconds)


def _run(args: argparse.Namespace) -> int:
    streams = streams_from_args(args)
    requests = plan(args, streams)
    settings = alarm_settings(args)
    if settings is not None and args.freshness_seconds is not None and \
            args.freshness_seconds <= args.buffer_seconds:
        note(COMMAND, f"--freshness-seconds {args.freshness_seconds} is not above "
                      f"--buffer-seconds {args.buffer_seconds}: the freshness alarm will fire "
                      "on every buffering cycle")
    if args.dry_run:
        if settings is None:
            print(json.dumps(requests, indent=2))
        else:
            alarms = [a for name in streams
                      for a in alarm_plan.plan_alarms(name, args.buffer_seconds, settings)]
            print(json.dumps({"CreateDeliveryStream": requests, "PutMetricAlarm": alarms},
                             indent=2))
        return EXIT_OK
    firehose = aws_client("firehose", args)
    logs = None if args.no_error_logging else aws_client("logs", args)
    #: each stream's buffering interval as it is, for its freshness alarm
    intervals: dict[str, int] = {}
    for request in requests:
        name = request["DeliveryStreamName"]
        intervals[name] = args.buffer_seconds
        existing = _describe(firehose, name)
        if existing is not None:
            print(f"exists   {name} ({existing['DeliveryStreamStatus']})")
            intervals[name] = _buffer_seconds(existing, args.buffer_seconds)
            for line in differences(request, existing):
                note(COMMAND, f"{name}: {line} (left as it is; change it with "
                              "`aws firehose update-destination`)")
            if args.record_compression:
                for line in compression_problems(existing, args.record_compression):
                    note(COMMAND, f"{name}: breaks {args.record_compression} records: {line}")
            continue
        if logs is not None:
            _ensure_log_group(logs, log_group(name))
        try:
            firehose.create_delivery_stream(**request)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
            print(f"exists   {name} (created concurrently)")
            continue
        print(f"created  {name}")
    if settings is not None:
        _ensure_alarms(aws_client("cloudwatch", args), streams, intervals, settings,
                       update=args.update_alarms)
    if args.wait_seconds <= 0:
        return EXIT_OK
    return _wait_active(firehose, streams, args.wait_seconds)


def _buffer_seconds(description: dict[str, Any], default: int) -> int:
    destinations = description.get("Destinations") or [{}]
    s3 = destinations[0].get("ExtendedS3DestinationDescription") or \
        destinations[0].get("S3DestinationDescription") or {}
    seconds = (s3.get("BufferingHints") or {}).get("IntervalInSeconds")
    return default if seconds is None else int(seconds)


def _ensure_alarms(cloudwatch: Any, streams: tuple[str, ...], intervals: dict[str, int],
                   settings: alarm_plan.AlarmSettings, *, update: bool) -> None:
    if not settings.topic_arns:
        note(COMMAND, "no --alarm-topic-arn: the alarms notify nobody (they show in the "
                      "CloudWatch console)")
    for name in streams:
        requests = alarm_plan.plan_alarms(name, intervals[name], settings)
        outcome = alarm_plan.ensure(cloudwatch, requests, update=update)
        parts = [f"{len(outcome.created)} created"] if outcome.created else []
        if outcome.unchanged:
            parts.append(f"{len(outcome.unchanged)} as planned")
        if outcome.updated:
            parts.append(f"{len(outcome.updated)} updated")
        elif outcome.differing:
            parts.append(f"{len(outcome.differing)} differ")
        print(f"alarms   {name}: {', '.join(parts)}")
        for alarm, lines in outcome.differing.items():
            action = "replaced by the plan" if update else \
                "left as it is; --update-alarms applies the plan"
            for line in lines:
                note(COMMAND, f"alarm {alarm}: {line} ({action})")


def _describe(firehose: Any, name: str) -> dict[str, Any] | None:
    try:
        response = firehose.describe_delivery_stream(DeliveryStreamName=name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise
    description: dict[str, Any] = response["DeliveryStreamDescription"]
    return description


def differences(request: dict[str, Any], description: dict[str, Any]) -> list[str]:
    """How an existing stream differs from the planned one, one line per setting."""
    if description.get("DeliveryStreamType", "DirectPut") != "DirectPut":
        return [f"source is {description.get('DeliveryStreamType')}, not DirectPut"]
    destinations = description.get("Destinations") or [{}]
    actual = destinations[0].get("ExtendedS3DestinationDescription")
    if actual is None:
        return ["destination is not Extended S3"]
    wanted = request["ExtendedS3DestinationConfiguration"]
    out = []
    for key in _COMPARED:
        have, want = actual.get(key), wanted.get(key)
        if key == "CompressionFormat":
            have = have or "UNCOMPRESSED"
        if have != want:
            out.append(f"{key} is {have!r}, the plan has {want!r}")
    return out


def _ensure_log_group(logs: Any, group: str) -> None:
    """Firehose writes error logs only into a log group and stream that exist."""
    try:
        logs.create_log_group(logGroupName=group)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code != "ResourceAlreadyExistsException":
            note(COMMAND, f"cannot create log group {group} ({explain(exc)}); "
                          "delivery errors will not be logged")
            return
    try:
        logs.create_log_stream(logGroupName=group, logStreamName=LOG_STREAM)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceAlreadyExistsException":
            note(COMMAND, f"cannot create log stream in {group} ({explain(exc)})")


def _wait_active(firehose: Any, streams: tuple[str, ...], seconds: float) -> int:
    deadline = time.monotonic() + seconds
    pending = list(streams)
    delay = 0.5
    while True:
        still = []
        for name in pending:
            description = _describe(firehose, name)
            status = None if description is None else description["DeliveryStreamStatus"]
            if status == "ACTIVE":
                continue
            if status in ("CREATING_FAILED", "DELETING", "DELETING_FAILED", None):
                reason = (description or {}).get("FailureDescription", {}).get("Details", "")
                error(COMMAND, f"{name} is {status or 'gone'}{': ' + reason if reason else ''}")
                return EXIT_ERROR
            still.append(name)
        pending = still
        if not pending:
            print(f"{len(streams)} streams ACTIVE: {', '.join(streams)}")
            return EXIT_OK
        if time.monotonic() >= deadline:
            error(COMMAND, f"still not ACTIVE after {seconds:g} s: {', '.join(pending)} "
                           "(run `firehose-buffer status` later)")
            return EXIT_ERROR
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 10.0)

"""The CloudWatch alarms ``provision --alarms`` puts on each delivery stream.

AWS's recommended Firehose alarms, with the thresholds the pipeline needs (namespace
AWS/Firehose, dimension DeliveryStreamName):

- ``ThrottledRecords`` above zero: Sum per minute in 3 of 5 minutes. Several producers on a
  stream make Firehose throttle a burst now and then, and the buffer retries those records;
  throttling minute after minute means the streams are too few.
- ``IncomingBytes``, ``IncomingRecords``, ``IncomingPutRequests``: Sum per 5 minutes / 300
  as a percentage of ``BytesPerSecondLimit``, ``RecordsPerSecondLimit``,
  ``PutRequestsPerSecondLimit`` (Firehose publishes each stream's limits as metrics; Minimum,
  so a limit changed within the period counts at its lower value) above --alarm-quota-share
  in one period: the early warning, five minutes into a ramp, before throttling starts.
- ``DeliveryToS3.DataFreshness`` (age of the oldest record not yet in S3): Maximum per minute
  above the freshness target in one minute. The target defaults to the stream's buffering
  interval plus FRESHNESS_MARGIN_SECONDS and never exceeds the one-hour window.
- ``DeliveryToS3.Success`` (successful S3 puts over all puts): Average per 5 minutes below 0.98.

Each metric is published only while something happens (no traffic, no IncomingBytes; no S3
put, no Success), so missing data is ``notBreaching``: a quiet stream is healthy, and an alarm
does not sit in INSUFFICIENT_DATA through every quiet night. A stuck delivery still publishes
a growing DataFreshness.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .common import chunks

NAMESPACE = "AWS/Firehose"
#: The pipeline's promise: an event is in S3 within this long.
FRESHNESS_WINDOW_SECONDS = 3600
#: How late a delivery may be past the buffering interval before the alarm fires: S3 writes of
#: a full 128 MiB buffer and Firehose's own retries take well under this.
FRESHNESS_MARGIN_SECONDS = 300
DELIVERY_SUCCESS_THRESHOLD = 0.98
DEFAULT_QUOTA_SHARE = 0.8
#: Alarm name suffixes (the name is ``<stream>-<suffix>``); no suffix ends with another, so
#: two streams' alarm names never collide.
SUFFIXES = ("throttled-records", "incoming-bytes-quota", "incoming-records-quota",
            "incoming-put-requests-quota", "data-freshness", "delivery-success")
#: (suffix, incoming metric, limit metric, what it counts)
_QUOTAS = (
    ("incoming-bytes-quota", "IncomingBytes", "BytesPerSecondLimit", "bytes"),
    ("incoming-records-quota", "IncomingRecords", "RecordsPerSecondLimit", "records"),
    ("incoming-put-requests-quota", "IncomingPutRequests", "PutRequestsPerSecondLimit",
     "PutRecord/PutRecordBatch requests"),
)
_TAGS = [{"Key": "created-by", "Value": "firehose-buffer"}]
_BY = " (firehose-buffer provision --alarms)"


@dataclass(frozen=True, slots=True)
class AlarmSettings:
    """What the user chose: where alarms notify, and the thresholds that are theirs to set."""

    topic_arns: tuple[str, ...] = ()
    quota_share: float = DEFAULT_QUOTA_SHARE
    #: None: the stream's buffering interval plus the margin (see freshness_target).
    freshness_seconds: int | None = None


def alarm_name(stream: str, suffix: str) -> str:
    return f"{stream}-{suffix}"


def freshness_target(buffer_seconds: int, override: int | None = None) -> int:
    """Seconds of DataFreshness above which a stream's delivery is late."""
    if override is not None:
        return override
    return min(buffer_seconds + FRESHNESS_MARGIN_SECONDS, FRESHNESS_WINDOW_SECONDS)


def plan_alarms(stream: str, buffer_seconds: int,
                settings: AlarmSettings) -> list[dict[str, Any]]:
    """The PutMetricAlarm requests for one stream, in SUFFIXES order."""
    dimensions = [{"Name": "DeliveryStreamName", "Value": stream}]
    actions = list(settings.topic_arns)
    common: dict[str, Any] = {
        "ActionsEnabled": True, "AlarmActions": actions, "OKActions": actions,
        "TreatMissingData": "notBreaching", "Tags": _TAGS,
    }

    def simple(suffix: str, metric: str, statistic: str, *, period: int, evaluation: int,
               datapoints: int, threshold: float, comparison: str,
               description: str) -> dict[str, Any]:
        return {
            "AlarmName": alarm_name(stream, suffix), "AlarmDescription": description + _BY,
            "Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dimensions,
            "Statistic": statistic, "Period": period, "EvaluationPeriods": evaluation,
            "DatapointsToAlarm": datapoints, "Threshold": threshold,
            "ComparisonOperator": comparison, **common,
        }

    percent = round(settings.quota_share * 100, 6)
    requests = [simple(
        "throttled-records", "ThrottledRecords", "Sum", period=60, evaluation=5, datapoints=3,
        threshold=0.0, comparison="GreaterThanThreshold",
        description=f"Firehose throttled records sent to {stream} in 3 of the last 5 "
        "minutes: the producers want more than the stream's quota. firehose-buffer "
        "retries throttled records; add streams (firehose-buffer status --metrics "
        "suggests how many).",
    )]
    for suffix, incoming, limit, what in _QUOTAS:
        stat = {"Namespace": NAMESPACE, "MetricName": incoming, "Dimensions": dimensions}
        limit_stat = {"Namespace": NAMESPACE, "MetricName": limit, "Dimensions": dimensions}
        requests.append({
            "AlarmName": alarm_name(stream, suffix),
            "AlarmDescription": f"{stream} received more than {percent:g}% of its {what} "
                                f"per second limit ({limit}), averaged over 5 minutes; "
                                "past 100% Firehose throttles." + _BY,
            "Metrics": [
                {"Id": "incoming", "MetricStat": {"Metric": stat, "Period": 300, "Stat": "Sum"},
                 "ReturnData": False},
                {"Id": "limit",
                 "MetricStat": {"Metric": limit_stat, "Period": 300, "Stat": "Minimum"},
                 "ReturnData": False},
                {"Id": "share", "Expression": "100 * (incoming / 300) / limit",
                 "Label": f"{incoming} per second, % of {limit}", "ReturnData": True},
            ],
            "EvaluationPeriods": 1, "DatapointsToAlarm": 1, "Threshold": float(percent),
            "ComparisonOperator": "GreaterThanThreshold", **common,
        })
    target = freshness_target(buffer_seconds, settings.freshness_seconds)
    requests.append(simple(
        "data-freshness", "DeliveryToS3.DataFreshness", "Maximum", period=60, evaluation=1,
        datapoints=1, threshold=float(target), comparison="GreaterThanThreshold",
        description=f"The oldest record in {stream} has waited more than {target} s for S3 "
        f"(buffering interval {buffer_seconds} s): delivery is late. Check the stream's "
        "error logs and the bucket's permissions.",
    ))
    requests.append(simple(
        "delivery-success", "DeliveryToS3.Success", "Average", period=300, evaluation=1,
        datapoints=1, threshold=DELIVERY_SUCCESS_THRESHOLD, comparison="LessThanThreshold",
        description=f"Fewer than {DELIVERY_SUCCESS_THRESHOLD:.0%} of {stream}'s S3 puts "
        "succeeded over 5 minutes. Firehose retries them; check the stream's error logs.",
    ))
    return requests


def describe(cloudwatch: Any, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The existing metric alarms among ``names``, by name."""
    found: dict[str, dict[str, Any]] = {}
    paginator = cloudwatch.get_paginator("describe_alarms")
    for chunk in chunks(list(names), 100):  # DescribeAlarms takes up to 100 names
        for page in paginator.paginate(AlarmNames=chunk):
            for alarm in page.get("MetricAlarms") or []:
                found[alarm["AlarmName"]] = alarm
    return found


@dataclass(slots=True)
class Outcome:
    """What ensure() did to one stream's alarms."""

    created: list[str]
    unchanged: list[str]
    #: alarm name -> how it differs from the plan (left as it is unless updating)
    differing: dict[str, list[str]]
    updated: list[str]


def ensure(cloudwatch: Any, requests: list[dict[str, Any]], *, update: bool) -> Outcome:
    """Create the planned alarms that do not exist; leave the others as they are (or, with
    ``update``, put the plan over those that differ from it)."""
    existing = describe(cloudwatch, (r["AlarmName"] for r in requests))
    outcome = Outcome([], [], {}, [])
    for request in requests:
        name = request["AlarmName"]
        alarm = existing.get(name)
        if alarm is None:
            cloudwatch.put_metric_alarm(**request)
            outcome.created.append(name)
            continue
        lines = differences(request, alarm)
        if not lines:
            outcome.unchanged.append(name)
            continue
        outcome.differing[name] = lines
        if update:
            # PutMetricAlarm replaces the whole definition (and ignores Tags on an update).
            cloudwatch.put_metric_alarm(**request)
            outcome.updated.append(name)
    return outcome


# Settings compared between the plan and an existing alarm. The description is not: its
# wording changes between versions of this tool without changing what the alarm does.
_COMPARED = ("Namespace", "MetricName", "Statistic", "Dimensions", "Period", "Metrics",
             "EvaluationPeriods", "DatapointsToAlarm", "Threshold", "ComparisonOperator",
             "TreatMissingData", "ActionsEnabled", "AlarmActions", "OKActions",
             "InsufficientDataActions")


def differences(request: dict[str, Any], alarm: dict[str, Any]) -> list[str]:
    """How an existing alarm differs from its planned request, one line per setting."""
    want, have = _normal(request), _normal(alarm)
    return [f"{key} is {have[key]!r}, the plan has {want[key]!r}"
            for key in _COMPARED if have[key] != want[key]]


def _normal(alarm: dict[str, Any]) -> dict[str, Any]:
    """A request or a described alarm with AWS's defaults filled in and lists ordered, so
    equal settings compare equal whichever way they were written."""
    evaluation = alarm.get("EvaluationPeriods")
    threshold = alarm.get("Threshold")
    return {
        "Namespace": alarm.get("Namespace"), "MetricName": alarm.get("MetricName"),
        "Statistic": alarm.get("Statistic"), "Period": alarm.get("Period"),
        "Dimensions": _dimensions(alarm.get("Dimensions")),
        "Metrics": [_query(q) for q in alarm.get("Metrics") or []],
        "EvaluationPeriods": evaluation,
        "DatapointsToAlarm": alarm.get("DatapointsToAlarm") or evaluation,
        "Threshold": None if threshold is None else float(threshold),
        "ComparisonOperator": alarm.get("ComparisonOperator"),
        "TreatMissingData": alarm.get("TreatMissingData") or "missing",
        "ActionsEnabled": alarm.get("ActionsEnabled", True),
        "AlarmActions": sorted(alarm.get("AlarmActions") or []),
        "OKActions": sorted(alarm.get("OKActions") or []),
        "InsufficientDataActions": sorted(alarm.get("InsufficientDataActions") or []),
    }


def _dimensions(dimensions: list[dict[str, str]] | None) -> list[tuple[str, str]]:
    return sorted((d["Name"], d["Value"]) for d in dimensions or [])


def _query(query: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"Id": query.get("Id"), "ReturnData": query.get("ReturnData", True)}
    if query.get("Expression") is not None:
        out["Expression"] = query["Expression"]
    stat = query.get("MetricStat")
    if stat:
        metric = stat.get("Metric") or {}
        out["MetricStat"] = (metric.get("Namespace"), metric.get("MetricName"),
                             _dimensions(metric.get("Dimensions")), stat.get("Period"),
                             stat.get("Stat"))
    return out

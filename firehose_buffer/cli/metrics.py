"""What the delivery streams did in the last hour, from CloudWatch (namespace AWS/Firehose).

Every series is read at one-minute resolution, the finest Firehose publishes, and reduced
here: a stream's peak rate is its largest one-minute sum over 60 (bursts of a few seconds do
not show in one-minute metrics), throttled records are summed, freshness is the largest
one-minute Maximum, delivery success the smallest one-minute Average. The limits are the
latest values Firehose published for the stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..quota import Quota
from .alarms import NAMESPACE
from .common import chunks

MINUTE = 60
WINDOW_MINUTES = 60
#: GetMetricData takes up to 500 queries per call.
_MAX_QUERIES = 500

#: key -> (metric name, statistic per minute)
SERIES: dict[str, tuple[str, str]] = {
    "bytes": ("IncomingBytes", "Sum"),
    "records": ("IncomingRecords", "Sum"),
    "requests": ("IncomingPutRequests", "Sum"),
    "bytes_limit": ("BytesPerSecondLimit", "Maximum"),
    "records_limit": ("RecordsPerSecondLimit", "Maximum"),
    "requests_limit": ("PutRequestsPerSecondLimit", "Maximum"),
    "throttled": ("ThrottledRecords", "Sum"),
    "freshness": ("DeliveryToS3.DataFreshness", "Maximum"),
    "success": ("DeliveryToS3.Success", "Average"),
}
#: the three quotas: incoming series -> (its limit series, the Quota field)
QUOTAS = {"bytes": ("bytes_limit", "bytes_per_second"),
          "records": ("records_limit", "records_per_second"),
          "requests": ("requests_limit", "requests_per_second")}

#: one series: the start of each minute -> its value
Series = dict[datetime, float]


def window(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The last WINDOW_MINUTES whole minutes: the minute in progress is left out, its sums
    would read low."""
    end = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    return end - timedelta(minutes=WINDOW_MINUTES), end


def fetch(cloudwatch: Any, streams: list[str], start: datetime,
          end: datetime) -> dict[str, dict[str, Series]]:
    """Every SERIES of every stream between ``start`` and ``end``, per minute."""
    out: dict[str, dict[str, Series]] = {name: {key: {} for key in SERIES} for name in streams}
    queries: list[tuple[str, str, str, dict[str, Any]]] = []
    for s, name in enumerate(streams):
        for key, (metric, stat) in SERIES.items():
            query_id = f"s{s}_{key}"
            queries.append((query_id, name, key, {
                "Id": query_id, "ReturnData": True,
                "MetricStat": {"Metric": {"Namespace": NAMESPACE, "MetricName": metric,
                                          "Dimensions": [{"Name": "DeliveryStreamName",
                                                          "Value": name}]},
                               "Period": MINUTE, "Stat": stat},
            }))
    for chunk in chunks(queries, _MAX_QUERIES):
        where = {query_id: (name, key) for query_id, name, key, _ in chunk}
        request: dict[str, Any] = {
            "MetricDataQueries": [query for _, _, _, query in chunk],
            "StartTime": start, "EndTime": end, "ScanBy": "TimestampAscending",
        }
        while True:
            response = cloudwatch.get_metric_data(**request)
            for result in response.get("MetricDataResults") or []:
                name, key = where[result["Id"]]
                series = out[name][key]
                for stamp, value in zip(result.get("Timestamps") or [],
                                        result.get("Values") or [], strict=False):
                    series[_minute(stamp)] = float(value)
            if not response.get("NextToken"):
                break
            request["NextToken"] = response["NextToken"]
    return out


@dataclass(frozen=True, slots=True)
class Usage:
    """One stream against one of its quotas over the window."""

    #: largest one-minute sum / 60; None when nothing was published
    peak_per_second: float | None
    peak_at: datetime | None
    #: the latest published limit; None when Firehose published none in the window
    limit: float | None

    @property
    def share(self) -> float | None:
        if self.peak_per_second is None or not self.limit:
            return None
        return self.peak_per_second / self.limit


@dataclass(frozen=True, slots=True)
class StreamMetrics:
    """One stream's CloudWatch figures as ``status --metrics`` prints them: each quota's peak
    use, throttled records, worst freshness, lowest delivery success."""

    usage: dict[str, Usage]  # keys of QUOTAS
    throttled: float | None
    freshness_max: float | None
    success_min: float | None


def summarize(series: dict[str, Series]) -> StreamMetrics:
    usage = {}
    for key, (limit_key, _) in QUOTAS.items():
        values = series[key]
        peak_at = max(values, key=lambda t: (values[t], t)) if values else None
        limits = series[limit_key]
        usage[key] = Usage(None if peak_at is None else values[peak_at] / MINUTE, peak_at,
                           limits[max(limits)] if limits else None)
    return StreamMetrics(
        usage=usage,
        throttled=sum(series["throttled"].values()) if series["throttled"] else None,
        freshness_max=max(series["freshness"].values(), default=None),
        success_min=min(series["success"].values(), default=None),
    )


def combined_peak(per_stream: list[Series]) -> tuple[float, datetime | None]:
    """The largest one-minute total across streams, per second, and its minute: what the
    streams carried together at their busiest (each stream's own peak may fall elsewhere)."""
    totals: dict[datetime, float] = {}
    for series in per_stream:
        for stamp, value in series.items():
            totals[stamp] = totals.get(stamp, 0.0) + value
    if not totals:
        return 0.0, None
    stamp = max(totals, key=lambda t: (totals[t], t))
    return totals[stamp] / MINUTE, stamp


def streams_for(rate: float, per_stream: float, headroom: float) -> int:
    """The fewest streams that carry ``rate`` with each at ``headroom`` of ``per_stream``."""
    if rate <= 0:
        return 1
    return max(1, math.ceil(rate / (per_stream * headroom) - 1e-9))


def limits_quota(metrics: list[StreamMetrics], assumed: Quota) -> tuple[Quota, bool]:
    """The per-stream quota to size with: the lowest limits Firehose published across the
    streams, each falling back to ``assumed``; and whether all three were published."""
    values = {}
    published = True
    for key, (_, field) in QUOTAS.items():
        limits = [limit for m in metrics if (limit := m.usage[key].limit)]
        if limits:
            values[field] = min(limits)
        else:
            values[field] = getattr(assumed, field)
            published = False
    return Quota(**values), published


def _minute(stamp: datetime) -> datetime:
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).replace(second=0, microsecond=0)



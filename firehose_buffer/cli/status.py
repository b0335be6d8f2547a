"""Describe the delivery streams of a configuration: status, destination and Direct PUT quota,
and how many sharded streams a peak rate needs.

The quota is the region's default (high in us-east-1, us-west-2 and eu-west-1, standard
elsewhere) unless --quota or FIREHOSE_BUFFER_QUOTA says otherwise: Firehose does not report a
stream's raised quota through its API. A packed record is at least 5 KB, so the byte quota is
the one that binds; streams are sized to run at --headroom of it at the peak.

--metrics adds the last hour from CloudWatch, per stream: the busiest minute's incoming
bytes, records and put requests per second against the limits Firehose publishes for the
stream, throttled records, the worst data freshness and S3 delivery success, and how many
streams the observed peak needs. --record-compression zstd|gzip checks each stream against
compressed records (exit status 1 when a stream would break them).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from ..quota import MIB, Quota
from . import metrics as cw
from .common import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    MISSING_STREAM_HINT,
    CommandError,
    add_connection_options,
    add_stream_options,
    aws_client,
    default_quota,
    error,
    guarded,
    note,
    streams_from_args,
)
from .provision import _describe
from .record_compression import RECORD_COMPRESSIONS, compression_problems

COMMAND = "status"
EXAMPLES = """\
examples:
  firehose-buffer status --stream events --shards 4 --region us-east-1

  # how many streams does a 20 MB/s peak need, and do I have them?
  firehose-buffer status --stream events --shards 4 --peak-mb-per-second 20

  # the last hour from CloudWatch: peaks against the limits, throttles, freshness, and how
  # many streams the observed peak needs
  firehose-buffer status --stream events --shards 4 --metrics

  # can these streams carry zstd-compressed records? (exit status 1 if not)
  firehose-buffer status --stream events --shards 4 --record-compression zstd

  # machine-readable, for the environment's configuration
  FIREHOSE_BUFFER_STREAMS=logs-a,logs-b firehose-buffer status --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    add_stream_options(parser)
    add_connection_options(parser)
    parser.add_argument("--quota", choices=["standard", "high"],
                        help="each stream's quota (default: FIREHOSE_BUFFER_QUOTA, else the "
                             "region's default)")
    parser.add_argument("--peak-mb-per-second", type=float, metavar="MB",
                        help="peak input in MB/s (1 MB = 1,000,000 bytes): print how many "
                             "streams it needs")
    parser.add_argument("--headroom", type=float, default=0.8, metavar="FRACTION",
                        help="share of each stream's byte quota to plan for at the peak "
                             "(default %(default)s)")
    parser.add_argument("--metrics", action="store_true",
                        help="add the last hour from CloudWatch and the streams its peak needs")
    parser.add_argument("--record-compression", choices=sorted(RECORD_COMPRESSIONS),
                        help="check that each stream delivers records compressed with this "
                             "codec as they are; exit 1 if one would break them")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    return guarded(COMMAND, lambda: _run(args))


def streams_needed(peak_bytes_per_second: float, quota: Quota, headroom: float) -> int:
    """The fewest streams whose byte quotas, each used to ``headroom``, carry the peak."""
    return cw.streams_for(peak_bytes_per_second, quota.bytes_per_second, headroom)


def _run(args: argparse.Namespace) -> int:
    if not 0 < args.headroom <= 1:
        raise CommandError("--headroom must be in (0, 1]")
    if args.peak_mb_per_second is not None and args.peak_mb_per_second < 0:
        raise CommandError("--peak-mb-per-second must not be negative")
    streams = streams_from_args(args, required=args.peak_mb_per_second is None)
    firehose = aws_client("firehose", args)
    region = firehose.meta.region_name
    quota = Quota.named(args.quota) if args.quota else default_quota(region)
    descriptions = {name: _describe(firehose, name) for name in streams}
    rows = [_row(name, description) for name, description in descriptions.items()]
    missing = [r["name"] for r in rows if r["status"] == "MISSING"]
    broken = []
    if args.record_compression:
        for row in rows:
            description = descriptions[row["name"]]
            if description is not None:
                row["compression_problems"] = compression_problems(
                    description, args.record_compression)
                if row["compression_problems"]:
                    broken.append(row["name"])
    observed = None
    if args.metrics:
        present = [r["name"] for r in rows if r["status"] != "MISSING"]
        observed = _observe(aws_client("cloudwatch", args), present, rows, quota,
                            args.headroom)
    sizing = None
    if args.peak_mb_per_second is not None:
        peak = args.peak_mb_per_second * 1e6
        sizing = {"peak_bytes_per_second": peak, "headroom": args.headroom,
                  "streams_needed": streams_needed(peak, quota, args.headroom),
                  "streams_configured": len(streams)}
    if args.json:
        document = {"region": region, "quota": _quota_json(quota), "streams": rows,
                    "sizing": sizing}
        if observed is not None:
            document["observed"] = observed
        print(json.dumps(document, indent=2))
    else:
        _print_table(rows, quota, region, sizing, args)
        if observed is not None:
            _print_metrics(rows, observed)
        if args.record_compression and not broken and len(missing) < len(rows):
            print(f"{args.record_compression}-compressed records: every stream delivers "
                  "them as they are")
    for row in rows:
        for problem in row.get("compression_problems") or []:
            note(COMMAND, f"{row['name']} would break {args.record_compression}-compressed "
                          f"records: {problem}")
    if missing:
        error(COMMAND, f"{len(missing)} of {len(rows)} streams do not exist: "
                       f"{', '.join(missing)} ({MISSING_STREAM_HINT})")
        return EXIT_ERROR
    if broken:
        error(COMMAND, f"{len(broken)} of {len(rows)} streams would break "
                       f"{args.record_compression}-compressed records: {', '.join(broken)}")
        return EXIT_FAILED
    return EXIT_OK


def _observe(cloudwatch: Any, streams: list[str], rows: list[dict[str, Any]],
             assumed: Quota, headroom: float) -> dict[str, Any]:
    """Fetch the last hour, put each stream's summary in its row, and size for the peak."""
    start, end = cw.window()
    series = cw.fetch(cloudwatch, streams, start, end)
    summaries = {name: cw.summarize(series[name]) for name in streams}
    for row in rows:
        summary = summaries.get(row["name"])
        if summary is not None:
            row["metrics"] = _metrics_json(summary)
    limits, published = cw.limits_quota(list(summaries.values()), assumed)
    peaks: dict[str, Any] = {}
    needed: dict[str, int] = {}
    for key, (_, field) in cw.QUOTAS.items():
        rate, at = cw.combined_peak([series[name][key] for name in streams])
        peaks[key] = {"per_second": rate, "at": _time(at)}
        per_stream = getattr(limits, field)
        needed[key] = cw.streams_for(rate, per_stream, headroom)
    # Packed records are 5 KB or more, so bytes bind; the others are checked all the same.
    needed["bytes"] = streams_needed(peaks["bytes"]["per_second"], limits, headroom)
    throttled = sum(s.throttled or 0 for s in summaries.values())
    return {"start": _time(start), "end": _time(end), "peak": peaks,
            "limits_per_stream": _quota_json(limits), "limits_published": published,
            "headroom": headroom, "throttled_records": throttled,
            "streams_needed": max(needed.values()), "streams_needed_by": needed,
            "streams_configured": len(rows)}


def _metrics_json(summary: cw.StreamMetrics) -> dict[str, Any]:
    out: dict[str, Any] = {
        key: {"peak_per_second": usage.peak_per_second, "peak_at": _time(usage.peak_at),
              "limit": usage.limit, "share": usage.share}
        for key, usage in summary.usage.items()
    }
    out.update(throttled_records=summary.throttled,
               freshness_max_seconds=summary.freshness_max, success_min=summary.success_min)
    return out


def _time(stamp: datetime | None) -> str | None:
    return None if stamp is None else stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(name: str, description: dict[str, Any] | None) -> dict[str, Any]:
    if description is None:
        return {"name": name, "status": "MISSING", "type": None, "destination": None}
    destinations = description.get("Destinations") or [{}]
    s3 = destinations[0].get("ExtendedS3DestinationDescription") or \
        destinations[0].get("S3DestinationDescription")
    destination = None
    if s3:
        bucket = str(s3.get("BucketARN", "")).rsplit(":", 1)[-1]
        hints = s3.get("BufferingHints") or {}
        destination = {
            "url": f"s3://{bucket}/{s3.get('Prefix') or ''}",
            "file_extension": s3.get("FileExtension"),
            "compression": s3.get("CompressionFormat") or "UNCOMPRESSED",
            "buffer_mib": hints.get("SizeInMBs"),
            "buffer_seconds": hints.get("IntervalInSeconds"),
        }
    return {"name": name, "status": description.get("DeliveryStreamStatus"),
            "type": description.get("DeliveryStreamType"), "destination": destination}


def _quota_json(quota: Quota) -> dict[str, float]:
    return {"requests_per_second": quota.requests_per_second,
            "records_per_second": quota.records_per_second,
            "bytes_per_second": quota.bytes_per_second}


def _describe_quota(quota: Quota) -> str:
    return (f"{quota.requests_per_second:,.0f} requests/s, "
            f"{quota.records_per_second:,.0f} records/s, "
            f"{quota.bytes_per_second / MIB:g} MiB/s")


def _print_table(rows: list[dict[str, Any]], quota: Quota, region: str,
                 sizing: dict[str, Any] | None, args: argparse.Namespace) -> None:
    if rows:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            d = r["destination"]
            where = "" if d is None else (
                f"  {d['url']} ({d['file_extension'] or 'no extension'}, {d['compression']}, "
                f"{d['buffer_mib']} MiB / {d['buffer_seconds']} s)")
            kind = f"  {r['type']}" if r["type"] else ""
            print(f"{r['name']:<{width}}  {r['status']}{kind}{where}")
        total = quota.bytes_per_second * len(rows) / MIB
        print(f"quota per stream in {region}: {_describe_quota(quota)}; "
              f"{len(rows)} streams: {total:g} MiB/s in all")
    if sizing is not None:
        need, have = sizing["streams_needed"], sizing["streams_configured"]
        verdict = "enough" if have >= need else f"{need - have} more needed"
        print(f"a peak of {args.peak_mb_per_second:g} MB/s needs {need} streams at "
              f"{args.headroom:.0%} of {quota.bytes_per_second / MIB:g} MiB/s each; "
              f"configured: {have} ({verdict})")


def _rate(key: str, value: float) -> str:
    return f"{value / 1e6:,.2f} MB" if key == "bytes" else f"{value:,.1f}"


def _usage_cell(key: str, usage: dict[str, Any]) -> str:
    if usage["peak_per_second"] is None:
        return "-"
    share = "" if usage["share"] is None else f" ({usage['share']:.0%})"
    return _rate(key, usage["peak_per_second"]) + share


def _print_metrics(rows: list[dict[str, Any]], observed: dict[str, Any]) -> None:
    start, end = observed["start"][11:16], observed["end"][11:16]
    print(f"\nlast hour, {start}-{end} UTC; rates: the busiest minute (% of the stream's limit)")
    header = ["stream", "bytes/s", "records/s", "put requests/s", "throttled",
              "freshness max", "S3 success min"]
    table = [header]
    quiet = []
    for row in rows:
        m = row.get("metrics")
        if m is None:
            continue
        if all(m[key]["peak_per_second"] is None for key in cw.QUOTAS) and \
                m["freshness_max_seconds"] is None:
            quiet.append(row["name"])
        table.append([
            row["name"], *(_usage_cell(key, m[key]) for key in cw.QUOTAS),
            "-" if m["throttled_records"] is None else f"{m['throttled_records']:,.0f}",
            "-" if m["freshness_max_seconds"] is None else f"{m['freshness_max_seconds']:,.0f} s",
            "-" if m["success_min"] is None else f"{m['success_min']:.1%}",
        ])
    peak = observed["peak"]
    table.append(["all (busiest minute)",
                  *(_rate(key, peak[key]["per_second"]) for key in cw.QUOTAS),
                  f"{observed['throttled_records']:,.0f}", "", ""])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        cells = [line[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(line[1:], widths[1:],
                                                                        strict=True))]
        print("  ".join(cells).rstrip())
    limits = observed["limits_per_stream"]
    source = "published by Firehose" if observed["limits_published"] else \
        "assumed where Firehose published none (--quota)"
    need, have = observed["streams_needed"], observed["streams_configured"]
    verdict = "enough" if have >= need else f"{need - have} more needed"
    if have > need:
        verdict = f"{have - need} fewer would do"
    print(f"the observed peak needs {need} streams at {observed['headroom']:.0%} of "
          f"{limits['bytes_per_second'] / MIB:g} MiB/s, "
          f"{limits['records_per_second']:,.0f} records/s and "
          f"{limits['requests_per_second']:,.0f} requests/s each ({source}); "
          f"configured: {have} ({verdict})")
    if observed["throttled_records"]:
        print("records were throttled: the peak is what Firehose accepted, the demand was "
              "higher")
    if quiet:
        print(f"no traffic published in the last hour: {', '.join(quiet)}")

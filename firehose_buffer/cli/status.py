"""Describe the delivery streams of a configuration: status, destination and Direct PUT quota,
and how many sharded streams a peak rate needs.

The quota is the region's default (high in us-east-1, us-west-2 and eu-west-1, standard
elsewhere) unless --quota or FIREHOSE_BUFFER_QUOTA says otherwise: Firehose does not report a
stream's raised quota through its API. A packed record is at least 5 KB, so the byte quota is
the one that binds; streams are sized to run at --headroom of it at the peak.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from ..quota import MIB, Quota
from .common import (
    EXIT_ERROR,
    EXIT_OK,
    MISSING_STREAM_HINT,
    CommandError,
    add_connection_options,
    add_stream_options,
    aws_client,
    default_quota,
    error,
    guarded,
    streams_from_args,
)
from .provision import _describe

COMMAND = "status"
EXAMPLES = """\
examples:
  firehose-buffer status --stream events --shards 4 --region us-east-1

  # how many streams does a 20 MB/s peak need, and do I have them?
  firehose-buffer status --stream events --shards 4 --peak-mb-per-second 20

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
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    return guarded(COMMAND, lambda: _run(args))


def streams_needed(peak_bytes_per_second: float, quota: Quota, headroom: float) -> int:
    """The fewest streams whose byte quotas, each used to ``headroom``, carry the peak."""
    if peak_bytes_per_second <= 0:
        return 1
    per_stream = quota.bytes_per_second * headroom
    return max(1, math.ceil(peak_bytes_per_second / per_stream - 1e-9))


def _run(args: argparse.Namespace) -> int:
    if not 0 < args.headroom <= 1:
        raise CommandError("--headroom must be in (0, 1]")
    if args.peak_mb_per_second is not None and args.peak_mb_per_second < 0:
        raise CommandError("--peak-mb-per-second must not be negative")
    streams = streams_from_args(args, required=args.peak_mb_per_second is None)
    firehose = aws_client("firehose", args)
    region = firehose.meta.region_name
    quota = Quota.named(args.quota) if args.quota else default_quota(region)
    rows = [_row(name, _describe(firehose, name)) for name in streams]
    missing = [r["name"] for r in rows if r["status"] == "MISSING"]
    sizing = None
    if args.peak_mb_per_second is not None:
        peak = args.peak_mb_per_second * 1e6
        sizing = {"peak_bytes_per_second": peak, "headroom": args.headroom,
                  "streams_needed": streams_needed(peak, quota, args.headroom),
                  "streams_configured": len(streams)}
    if args.json:
        print(json.dumps({"region": region, "quota": _quota_json(quota), "streams": rows,
                          "sizing": sizing}, indent=2))
    else:
        _print_table(rows, quota, region, sizing, args)
    if missing:
        error(COMMAND, f"{len(missing)} of {len(rows)} streams do not exist: "
                       f"{', '.join(missing)} ({MISSING_STREAM_HINT})")
        return EXIT_ERROR
    return EXIT_OK


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

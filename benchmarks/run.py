"""Run every benchmark, print one table, write it as JSON.

    python benchmarks/run.py [--quick] [--output bench-results/latest.json] [--only a,b]

Each figure is a ratio against a reference measured in the same run. Exit status is 0 unless
a benchmark crashed: missed goals are findings, not failures. Groups: hot_path (figures 1, 2),
packer (3), end_to_end (4, 6), end_to_end_tls (4 over HTTPS, against a floor that also
encrypts), max_throughput (5), cost (7), naive (8), botocore (the lead), transport (CPU per
byte of the lean transport against botocore and the floor, over HTTP and HTTPS), encoding (what
each input check costs), server (a FastAPI endpoint with and without the buffer; wrk for its
saturation figure), coldstart (import and construction in a fresh process, for
Lambda), asyncio_close (loop stalls while aclose() drains a backlog; put() on a full buffer),
workers (4 producer processes bursting on the same 4 streams: drain time against the quota),
compression (compressed records per codec and level on tracking-like and worst-case events:
ratio, bill, CPU per byte, cut waste, page faults), durable (durable segments: put() CPU and
page faults against memory mode, the threads' CPU added at 16 MB/s, 100+ random kills of a
producing process recovered by another, the recovery scan), compressed_e2e (the compression
issue's goals end to end: billed/raw per codec and rate, streams for a 16 MB/s peak, CPU per
raw byte and page faults at 16 MB/s against no compression, no loss under injected faults).

Not run unless named with --only: compare (``benchmarks/compare.py``: hot_path, packer, cost
and end_to_end of a baseline revision's tree and of this one, interleaved, before/after).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import (  # noqa: E402  (the path above makes the package importable)
    asyncio_close,
    botocore_profile,
    coldstart,
    compare,
    compressed_e2e,
    compressed_records,
    cost,
    durable,
    encoding,
    end_to_end,
    hot_path,
    packer,
    server,
    transport,
    workers,
)
from benchmarks.emulator_proc import AWS_ENV  # noqa: E402
from benchmarks.report import Row, table, write_json  # noqa: E402

GROUPS: dict[str, Callable[[bool], list[Row]]] = {
    "hot_path": hot_path.run,
    "encoding": encoding.run,
    "packer": packer.run,
    "cost": cost.run,
    "end_to_end": end_to_end.steady_load,
    "end_to_end_tls": end_to_end.steady_load_tls,
    "max_throughput": end_to_end.max_throughput,
    "naive": end_to_end.naive,
    "botocore": botocore_profile.run,
    "transport": transport.run,
    "server": server.run,
    "coldstart": coldstart.run,
    "asyncio_close": asyncio_close.run,
    "workers": workers.run,
    "compression": compressed_records.run,
    "durable": durable.run,
    "compressed_e2e": compressed_e2e.run,
    "compare": compare.run,
}
#: Groups that run only when named: too long for the default run (or CI's --quick).
ON_REQUEST = {"compare"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, for CI (~1 min)")
    parser.add_argument("--output", type=Path, default=None, help="write the rows as JSON")
    parser.add_argument("--only", default="", help=f"comma-separated groups of {list(GROUPS)}")
    args = parser.parse_args(argv)
    os.environ.update(AWS_ENV)
    chosen = [g.strip() for g in args.only.split(",") if g.strip()] or [
        g for g in GROUPS if g not in ON_REQUEST]
    unknown = set(chosen) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; known: {list(GROUPS)}")
    rows: list[Row] = []
    crashed: list[str] = []
    durations: dict[str, float] = {}
    started = time.perf_counter()
    for name in chosen:
        t0 = time.perf_counter()
        print(f"[{name}] ...", file=sys.stderr, flush=True)
        try:
            rows.extend(GROUPS[name](args.quick))
        except Exception:
            crashed.append(name)
            traceback.print_exc()
            rows.append(Row(f"{name}: CRASHED", float("nan"), "", notes="see stderr"))
        durations[name] = round(time.perf_counter() - t0, 1)
        print(f"[{name}] {durations[name]} s", file=sys.stderr, flush=True)
    print(table(rows))
    missed = [r.figure for r in rows if r.met is False]
    print(f"\n{len(rows)} figures, {sum(r.met is True for r in rows)} goals met, "
          f"{len(missed)} missed, {len(crashed)} crashed; "
          f"{time.perf_counter() - started:.0f} s")
    if args.output is not None:
        write_json(args.output, rows, {
            "quick": args.quick,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "python": sys.version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "durations_seconds": durations,
            "crashed": crashed,
            "missed_goals": missed,
            "unix_time": time.time(),
        })
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Compressed records: ratio, bill, CPU, cut waste and page faults per codec and level.

Both event sets (``tracking_events.mixed``, compressible; ``events.mixed``, the worst case)
go through ``Compressor.compress`` as a sender would drive it: one call per PutRecordBatch
(at most 4 MiB, 500 records), records of 512 KiB wire target (the default record target: half
a second of a 1 MiB/s stream), each call taking every line left. Per codec and level:

- ratio: raw / wire bytes; the reference is one frame (or member) per record compressed in
  one go from the same lines, so the ratio column is what the flushes for the cut cost.
- billed/raw: each record rounded up to 5,120 bytes, over raw bytes; the reference is the
  same lines uncompressed, packed by ``packing.cut_records`` at the same target (today).
- CPU: ns of the calling thread (``time.thread_time``) per raw byte, best of a few rounds;
  the reference is base64 plus SHA-256 of the same bytes (what each byte sent costs today).
- cut: billed/wire of the least-waste cut; the reference is the same compressor cutting at the
  last line that fits (window 0, no choice: whatever its last step wastes). The last record of
  the run is left out of both (it ends where the lines end). Its CPU is in the details.
- faults: minor page faults (``ru_minflt``) per MB of raw lines over the measured rounds,
  after a warm-up round (the buffers are then at their high-water mark).

    python benchmarks/run.py --only compression [--quick]
    python -m benchmarks.compressed_records [--quick] [--sweep]  # compact; --sweep: windows

(Not ``benchmarks/compression.py``: run as a script, ``benchmarks/`` is first on ``sys.path``,
and a ``compression`` module there would hide the standard library's ``compression.zstd``.)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import resource
import sys
import time
import zlib
from dataclasses import dataclass
from itertools import accumulate

import orjson

from firehose_buffer._core.compression import Compressor, zstd_module
from firehose_buffer._core.packing import billed_bytes, cut_records
from firehose_buffer._service.firehose import FIREHOSE

from . import events, tracking_events
from .report import Row

BILLING_STEP_BYTES = FIREHOSE.billing_step
MAX_EVENTS_PER_RECORD = FIREHOSE.max_events_per_record
TARGET = 512 * 1024
LEVELS = (("zstd", 1), ("zstd", 3), ("zstd", 6), ("gzip", 1), ("gzip", 6))
#: Goals from the compression issue, for the compressor alone (the end-to-end figures are the
#: scheduler's): billed/raw per event set and codec.
GOALS = {("tracking", "zstd"): 0.25, ("tracking", "gzip"): 0.33, ("worst", "zstd"): 0.68}
#: A whole put-to-ack cycle may fault 0.1 times per 4 KB event (25 per MB); compressing
#: should take at most a tenth of that.
FAULTS_GOAL = 2.5


@dataclass(slots=True)
class Lines:
    name: str
    data: bytes
    ends: list[int]

    @property
    def raw(self) -> int:
        return len(self.data)


@dataclass(slots=True)
class Result:
    raw: int = 0
    wire: int = 0
    billed: int = 0
    records: int = 0
    cut_wire: int = 0
    cut_billed: int = 0
    longest_waste: int = 0
    whole_once_wire: int = 0
    seconds: float = 0.0
    faults_per_mb: float = 0.0
    flushes: int = 0
    recompressed: int = 0


def event_sets(quick: bool) -> list[Lines]:
    """Each event set's lines: a pool of distinct events (4.4 or 8.8 MB) repeated in the same
    order, ~13 MB (quick) or ~97 MB in all, so the cut is seen on tens of records. A repeat
    is a whole pool away from its previous copy, beyond zstd's window at these levels (2 MB at
    levels 3 and 6) and deflate's (32 KB), so repetition does not flatter the ratio."""
    pool, copies = (2000, 3) if quick else (4000, 11)
    out = []
    for name, evs in (("tracking", tracking_events.mixed(pool, seed=5)),
                      ("worst", events.mixed(pool, seed=6))):
        lines = [orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in evs] * copies
        out.append(Lines(name, b"".join(lines), list(accumulate(map(len, lines)))))
    return out


def _calls(lines: Lines, compressor: Compressor) -> tuple[float, int, list[bytes], list[int]]:
    """Every line through ``compressor``, one call per batch: CPU seconds and minor page
    faults of the calls alone, the records (copied) and each record's size had it been cut at
    its longest candidate."""
    view = memoryview(lines.data)
    ends = lines.ends
    first = 0
    seconds = 0.0
    faults = 0
    records: list[bytes] = []
    longest: list[int] = []
    clock = time.thread_time
    while first < len(ends):
        offset = ends[first - 1] if first else 0
        rel = [e - offset for e in ends[first:]]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = clock()
        result = compressor.compress(view[offset:], rel, target=TARGET)
        seconds += clock() - start
        faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        records.extend(bytes(r) for r in result.records)
        longest.extend(result.longest)
        if result.consumed == 0:
            raise RuntimeError("the compressor consumed nothing")
        first += result.consumed
    return seconds, faults, records, longest


def _one_frame(codec: str, level: int, data: memoryview) -> int:
    """Size of ``data`` compressed in one go into one frame or member."""
    if codec == "gzip":
        z = zlib.compressobj(level, zlib.DEFLATED, 31)
        return len(z.compress(data)) + len(z.flush())
    name, module = zstd_module()
    if name == "zstandard":
        return len(module.ZstdCompressor(level=level).compress(data))
    return len(module.compress(data, level=level))


def measure(lines: Lines, codec: str, level: int, rounds: int, *, one_frame: bool = True,
            **options: int) -> Result:
    compressor = Compressor(codec, level, **options)
    _calls(lines, compressor)  # warm up: buffers to their high-water mark, ratio estimate
    compressor.flushes = compressor.recompressed_bytes = 0
    best = float("inf")
    faults = 0
    records: list[bytes] = []
    longest: list[int] = []
    for _ in range(rounds):
        seconds, round_faults, records, longest = _calls(lines, compressor)
        best = min(best, seconds)
        faults += round_faults
    res = Result(raw=lines.raw, seconds=best, records=len(records),
                 faults_per_mb=faults / (rounds * lines.raw / 1e6),
                 flushes=compressor.flushes // rounds,
                 recompressed=compressor.recompressed_bytes // rounds)
    view = memoryview(lines.data)
    pos = 0
    for i, (record, size) in enumerate(zip(records, longest, strict=True)):
        res.wire += len(record)
        res.billed += billed_bytes(len(record))
        raw = _raw_length(codec, record)
        once = _one_frame(codec, level, view[pos:pos + raw]) if one_frame else 0
        res.whole_once_wire += once
        if i < len(records) - 1:  # the last record is cut where the lines end, not aligned
            res.cut_wire += len(record)
            res.cut_billed += billed_bytes(len(record))
            res.longest_waste += -size % BILLING_STEP_BYTES
        pos += raw
    if pos != lines.raw:
        raise RuntimeError(f"records hold {pos} of {lines.raw} raw bytes")
    return res


def _raw_length(codec: str, record: bytes) -> int:
    if codec == "gzip":
        return int.from_bytes(record[-4:], "little")  # ISIZE: records are far below 4 GiB
    name, module = zstd_module()
    if name == "zstandard":
        return len(module.ZstdDecompressor().decompressobj().decompress(record))
    return len(module.decompress(record))


def _uncompressed_billed(lines: Lines) -> int:
    ends = lines.ends
    sizes = [b - a for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    total = previous = 0
    for cut in cut_records(sizes, len(sizes), TARGET, MAX_EVENTS_PER_RECORD):
        total += billed_bytes(ends[cut - 1] - previous)
        previous = ends[cut - 1]
    return total


def _send_cost(lines: Lines, rounds: int) -> float:
    """Seconds of base64 plus SHA-256 over the raw bytes, in pieces of one record."""
    best = float("inf")
    data = memoryview(lines.data)
    for _ in range(rounds):
        start = time.thread_time()
        for offset in range(0, len(data), TARGET):
            encoded = base64.b64encode(data[offset:offset + TARGET])
            hashlib.sha256(encoded).digest()
        best = min(best, time.thread_time() - start)
    return best


def _rows(lines: Lines, codec: str, level: int, res: Result, *, naive: Result, plain_billed: int,
          send_seconds: float) -> list[Row]:
    label = f"comp. {lines.name} {codec}-{level}"
    details = {"raw_bytes": res.raw, "wire_bytes": res.wire, "billed_bytes": res.billed,
               "records": res.records, "flushes": res.flushes,
               "recompressed_raw_bytes": res.recompressed,
               "cut_waste_least": res.cut_billed - res.cut_wire,
               "cut_waste_longest": res.longest_waste,
               "one_frame_wire": res.whole_once_wire, "seconds": res.seconds,
               "naive_cut_billed": naive.cut_billed, "naive_cut_wire": naive.cut_wire,
               "naive_seconds": naive.seconds}
    billed_raw = res.billed / res.raw
    goal = GOALS.get((lines.name, codec))
    return [
        Row(f"{label}: raw/wire", res.raw / res.wire, "x", res.raw / res.whole_once_wire,
            "one frame per record", details=details),
        Row(f"{label}: billed/raw", billed_raw, "", plain_billed / res.raw,
            "uncompressed, packed", goal=f"<= {goal}" if goal else "",
            met=billed_raw <= goal if goal else None),
        Row(f"{label}: CPU", res.seconds / res.raw * 1e9, "ns/raw B",
            send_seconds / res.raw * 1e9, "base64+SHA-256"),
        Row(f"{label}: cut billed/wire", res.cut_billed / res.cut_wire, "",
            naive.cut_billed / naive.cut_wire, "no choice: last line that fits"),
        Row(f"{label}: faults", res.faults_per_mb, "/MB raw", goal=f"<= {FAULTS_GOAL}",
            met=res.faults_per_mb <= FAULTS_GOAL),
    ]


def run(quick: bool) -> list[Row]:
    rounds = 1 if quick else 3
    rows: list[Row] = []
    for lines in event_sets(quick):
        plain = _uncompressed_billed(lines)
        send = _send_cost(lines, rounds)
        for codec, level in LEVELS:
            res = measure(lines, codec, level, rounds)
            naive = measure(lines, codec, level, rounds, one_frame=False, window_bytes=0,
                            good_enough=-1)
            rows.extend(_rows(lines, codec, level, res, naive=naive, plain_billed=plain,
                              send_seconds=send))
    return rows


def _compact(rows: list[Row]) -> str:
    """One line per event set, codec and level."""
    out = [f"{'set codec-level':28} {'raw/wire':>8} {'1-frame':>8} {'billed/raw':>10} "
           f"{'ns/B':>6} {'cut b/w':>8} {'naive b/w':>9} {'faults/MB':>9}"]
    for i in range(0, len(rows), 5):
        ratio, billed, cpu, cut, faults = rows[i:i + 5]
        name = ratio.figure.removeprefix("comp. ").removesuffix(": raw/wire")
        out.append(f"{name:28} {ratio.measured:8.3f} {ratio.reference or 0:8.3f} "
                   f"{billed.measured:10.4f} {cpu.measured:6.2f} {cut.measured:8.4f} "
                   f"{cut.reference or 0:9.4f} {faults.measured:9.2f}")
    return "\n".join(out)


def sweep(quick: bool) -> str:
    """Cut waste, flush cost and CPU against the alignment window and early stop."""
    out = [f"{'set codec-level':22} {'window':>6} {'good':>5} {'billed/wire':>11} "
           f"{'wire/1-frame':>12} {'flushes/rec':>11} {'recomp%':>7} {'ns/B':>6}"]
    for lines in event_sets(quick):
        for codec, level in (("zstd", 3), ("gzip", 1)):
            for window in (0, 1, 2, 4):
                for good in (0, 64, 256):
                    res = measure(lines, codec, level, 1,
                                  window_bytes=window * BILLING_STEP_BYTES, good_enough=good)
                    out.append(
                        f"{lines.name + ' ' + codec + '-' + str(level):22} {window:6} "
                        f"{good:5} {res.cut_billed / res.cut_wire:11.4f} "
                        f"{res.wire / res.whole_once_wire:12.4f} "
                        f"{res.flushes / res.records:11.1f} "
                        f"{100 * res.recompressed / res.raw:7.2f} "
                        f"{res.seconds / res.raw * 1e9:6.2f}"
                    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compressed_records")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="alignment windows instead")
    args = parser.parse_args(argv)
    print(sweep(args.quick) if args.sweep else _compact(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

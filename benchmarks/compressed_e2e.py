"""Compressed records end to end: the goals of the compression issue, from one run.

Default settings otherwise: 16 streams at the standard quota (1 MiB/s each), keyless, linger
1 s, zstd level 3 and gzip level 1 (the defaults). Events are tracking-like
(``benchmarks/tracking_events.py``, 0.5-4 KB, mean ~2.2 KB) unless the row says worst case
(``benchmarks/events.py``: three quarters random base64).

- c1-c3, billed/raw: simulated time through the real ``Scheduler.tick`` and the worker's own
  ``compress_runs`` (``benchmarks/simulate.py``; real compression of every byte), one
  simulated minute (15 s with ``--quick``) at 500 and at 4,000 events/s; a wall-clock minute
  per codec and rate would take ten. The reference is the same lines uncompressed.
- c4-c6 run against the emulator in its own process, each producer in a fresh process
  (``benchmarks/compressed_load.py``) offering 16 MB/s of raw lines from 4 threads, each put()
  encoding a dict; figures are deltas over a steady window after a warm-up:
  - c4, streams for the 16 MB/s peak: the same 16 MB/s on 4 streams, zstd (delivered keeps up,
    0 throttles, 0 lost), and the arithmetic from the raw/wire measured on 16 streams.
  - c5, CPU per raw byte, zstd against no compression in the same run (interleaved rounds,
    medians): the library's threads only, each stage over the bytes it handled: producers'
    time inside put() (their own CPU clock around each call) over the raw bytes put, the
    worker (cut, compress) and the senders (base64, SHA-256, HTTP) and the transport's
    deadline thread over the raw bytes acknowledged. The benchmark's own pacing is left out.
  - c6, minor page faults per 4 KB of raw lines over the whole cycle (put to acknowledgement):
    the producer process's ``ru_minflt`` over the window, with where they happen: each
    thread's count from /proc, the producers' inside put(), and the senders' by phase of the
    request (wrappers around the functions the lean transport calls, in both modes alike).
    Full runs add the same with glibc told to keep freed memory (``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``): what is left then is not the allocator handing pages back.
- c7, events lost with faults injected (records failed inside a 200, 500s, 503s, resets
  before and after the records are stored; seeded; see ``FAULT_RATES``) at 16 MB/s raw on 16
  streams: every event carries a unique number, and every delivered object is decoded and
  each line compared with the one put.

    python benchmarks/run.py --only compressed_e2e [--quick]
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any

import orjson

from firehose_buffer import BufferConfig
from firehose_buffer._core.compression import decompress_object

from . import events, tracking_events
from .compressed_load import POOL, event_pool
from .emulator_proc import EmulatorProcess
from .end_to_end import _child
from .report import Row
from .simulate import simulate

STREAMS = [f"bench-{k}" for k in range(16)]
PEAK_STREAMS = [f"peak-{k}" for k in range(4)]
FAULT_STREAMS = [f"faulty-{k}" for k in range(16)]
PEAK_MB_S = 16.0
MIB = 1024 * 1024
BILLED_GOALS = {("tracking", "zstd"): 0.25, ("tracking", "gzip"): 0.33, ("worst", "zstd"): 0.68}
STREAMS_GOAL = 4
CPU_GOAL = 1.10
FAULTS_GOAL = 0.1
#: A fifth of the calls fail whole (500, 503, a reset before or after the records are
#: stored), and 15% of the records of the rest fail inside a 200.
FAULT_RATES = ("record_service_unavailable=0.10,record_internal_failure=0.05,http_500=0.05,"
               "http_503=0.05,reset_before_store=0.05,reset_after_store=0.05")
#: glibc's knobs that keep freed memory in the process (no mmap per large block, no trim).
KEEP_FREED = {"MALLOC_MMAP_THRESHOLD_": str(64 * MIB), "MALLOC_TRIM_THRESHOLD_": str(2**30)}
LIBRARY_KINDS = ("worker", "senders", "deadline")


def run(quick: bool) -> list[Row]:
    rows = billed_rows(quick)
    rows += wall_clock_rows(quick)
    rows += fault_injection_rows(quick)
    return rows


# -- c1-c3: billed/raw, simulated time ------------------------------------------------------

def _lines(kind: str, seed: int) -> list[bytes]:
    evs = tracking_events.mixed(3000, seed=seed) if kind == "tracking" else \
        events.mixed(3000, seed=seed)
    return [orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in evs]


def billed_rows(quick: bool) -> list[Row]:
    seconds = 15 if quick else 60
    rows = []
    for kind, codecs in (("tracking", ("zstd", "gzip")), ("worst", ("zstd",))):
        for rate in (500, 4000):
            pool = _lines(kind, seed=rate)
            lines = [pool[k % len(pool)] for k in range(rate * seconds)]
            results = {}
            for codec in (None, *codecs):
                config = BufferConfig(streams=tuple(f"cost-{k}" for k in range(16)),
                                      compression=codec)
                start = time.perf_counter()
                r = simulate(config, lines, rate)
                if r.events_delivered != len(lines) or r.raw_bytes_sent != r.raw_bytes:
                    raise RuntimeError(f"simulation lost lines: {r}")
                results[codec] = (r, time.perf_counter() - start)
            plain = results[None][0]
            plain_ratio = plain.billed_bytes / plain.raw_bytes_sent
            label = "tracking-like" if kind == "tracking" else "worst case"
            for codec in codecs:
                r, wall = results[codec]
                ratio = r.billed_bytes / r.raw_bytes_sent
                goal = BILLED_GOALS[(kind, codec)]
                rows.append(Row(
                    f"c{1 if kind == 'tracking' else 3}. billed/raw, {label}, {rate} ev/s, "
                    f"{codec}", ratio, "", plain_ratio, "uncompressed, same lines",
                    f"<= {goal}", ratio <= goal,
                    f"simulated {seconds} s through Scheduler.tick + compress_runs; "
                    f"raw/wire {r.raw_bytes_sent / r.bytes_sent:.2f}, "
                    f"{r.bytes_sent / r.records_sent / 1024:.0f} KiB/record",
                    {"events": len(lines), "records": r.records_sent,
                     "requests": r.requests_sent, "raw_bytes": r.raw_bytes_sent,
                     "wire_bytes": r.bytes_sent, "billed_bytes": r.billed_bytes,
                     "uncompressed_records": plain.records_sent,
                     "simulated_seconds": r.simulated_seconds, "wall_seconds": wall}))
    return rows


# -- c4-c6: 16 MB/s against the emulator ----------------------------------------------------

def _load(emulator: EmulatorProcess, streams: list[str], compression: str, *, warmup: float,
          seconds: float, env: dict[str, str] | None = None, mb_s: float = PEAK_MB_S,
          extra: tuple[str, ...] = ()) -> dict[str, Any]:
    before = _throttles(emulator, streams)
    r = _child("benchmarks.compressed_load", "--endpoint", emulator.endpoint_url,
               "--streams", ",".join(streams), "--compression", compression,
               "--mb-s", str(mb_s), "--warmup", str(warmup), "--seconds", str(seconds),
               "--probe", *extra, timeout=warmup + seconds + 180, env=env)
    r["emulator_throttles"] = _throttles(emulator, streams) - before
    r.pop("samples", None)
    return r


def _throttles(emulator: EmulatorProcess, streams: list[str]) -> int:
    total = 0
    for name in streams:
        s = emulator.control.stats(name)
        total += s.throttled_requests + s.throttled_records
    return total


def _ns_per_byte(r: dict[str, Any]) -> dict[str, float]:
    """Each stage's CPU over the raw bytes it handled (see the module docstring)."""
    sent = max(1, r["window_raw_sent"])
    out = {"put": r["put_cpu_seconds"] / max(1, r["window_raw_put"]) * 1e9}
    for kind in LIBRARY_KINDS:
        out[kind] = r["cpu_by_kind"].get(kind, 0.0) / sent * 1e9
    out["total"] = sum(out.values())
    return out


def _faults(rs: list[dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    """Faults per 4 KB of raw lines put over all rounds, and where they happened."""
    raw = sum(r["window_raw_put"] for r in rs)
    total = sum(r["faults_process"] for r in rs)
    kinds: dict[str, int] = {}
    phases: dict[str, int] = {}
    for r in rs:
        for k, v in r["faults_by_kind"].items():
            kinds[k] = kinds.get(k, 0) + v
        for k, v in r["faults_by_sender_phase"].items():
            phases[k] = phases.get(k, 0) + v
    inside_put = sum(r["faults_inside_put"] or 0 for r in rs)
    body = phases.get("body", 0)
    where = {
        "faults": total,
        "per_4kb_by_thread": {k: v / raw * 4096 for k, v in sorted(kinds.items())},
        "producers_inside_put": inside_put,
        "sender_phases": phases,
        "body_base64": phases.get("base64", 0),
        "body_join": body - phases.get("base64", 0),
        "requests": sum(r["window_requests"] for r in rs),
        "wire_bytes": sum(r["window_wire_sent"] for r in rs),
    }
    return total / raw * 4096, where


def _share_text(where: dict[str, Any], total_per_4kb: float) -> str:
    per = where["per_4kb_by_thread"]
    parts = [f"{k} {v / total_per_4kb:.0%}" for k, v in per.items()
             if total_per_4kb and v / total_per_4kb >= 0.005]
    phases = where["sender_phases"]
    send_faults = phases.get("send (whole call)", 0)
    text = f"{where['faults']} faults; by thread: " + ", ".join(parts)
    if send_faults:
        text += (f"; of the senders' {send_faults} in calls, building the body "
                 f"{phases.get('body', 0) / send_faults:.0%} (base64 "
                 f"{where['body_base64'] / send_faults:.0%}, join "
                 f"{where['body_join'] / send_faults:.0%})")
    text += f"; producers' inside put(): {where['producers_inside_put']}"
    return text


def wall_clock_rows(quick: bool) -> list[Row]:
    warmup, seconds, rounds = (1.5, 3.0, 1) if quick else (5.0, 15.0, 3)
    # The peak run's verdict is whether the backlog stays put: a longer window in any mode.
    peak_warmup, peak_seconds = (2.0, 5.0) if quick else (5.0, 20.0)
    runs: dict[str, list[dict[str, Any]]] = {"none": [], "zstd": []}
    kept: dict[str, list[dict[str, Any]]] = {"none": [], "zstd": []}
    with EmulatorProcess(STREAMS + PEAK_STREAMS, "standard") as emulator:
        emu_cpu0 = emulator.cpu_seconds()
        for _ in range(rounds):  # interleaved: the machine's moods fall on both alike
            for mode in ("none", "zstd"):
                runs[mode].append(_load(emulator, STREAMS, mode, warmup=warmup,
                                        seconds=seconds))
        peak = _load(emulator, PEAK_STREAMS, "zstd", warmup=peak_warmup, seconds=peak_seconds)
        if not quick:
            for mode in ("none", "zstd"):
                kept[mode].append(_load(emulator, STREAMS, mode, warmup=warmup,
                                        seconds=seconds, env=KEEP_FREED))
        emu_cpu = emulator.cpu_seconds() - emu_cpu0
    rows: list[Row] = []

    # c4: streams for the peak.
    zstd = runs["zstd"]
    raw_wire = sum(r["window_raw_sent"] for r in zstd) / max(1, sum(r["window_wire_sent"]
                                                                   for r in zstd))
    exact = PEAK_MB_S * 1e6 / raw_wire / MIB
    needed = math.ceil(exact)
    rows.append(Row(
        "c4. streams for a 16 MB/s raw peak at 1 MiB/s, tracking-like, zstd", needed, "streams",
        math.ceil(PEAK_MB_S * 1e6 / MIB), "uncompressed", f"<= {STREAMS_GOAL}",
        needed <= STREAMS_GOAL,
        f"16 MB/s / raw-wire {raw_wire:.2f} (measured on 16 streams) / 1 MiB/s = {exact:.2f}",
        {"raw_over_wire": raw_wire, "exact": exact}))
    offered, delivered = peak["offered_raw_mb_s"], peak["delivered_raw_slope_mb_s"]
    lost = peak["events_put"] - peak["events_delivered"]
    keeps_up = (offered >= 0.97 * PEAK_MB_S and delivered >= 0.95 * offered
                and peak["backlog_end_bytes"] <= 2.5 * offered * 1e6)
    rows += [
        Row("c4. 16 MB/s raw on 4 streams, zstd: delivered", delivered, "MB/s raw", offered,
            "offered", "keeps up", keeps_up,
            f"wire {peak['wire_mb_s']:.2f} MB/s = {peak['wire_mb_s'] * 1e6 / (4 * MIB):.0%} of "
            f"4 x 1 MiB/s; backlog {peak['backlog_start_bytes'] / 1e6:.1f} -> "
            f"{peak['backlog_end_bytes'] / 1e6:.1f} MB over the {peak['window_seconds']:.0f} s "
            "window; delivered: slope fitted to 4 samples/s", {"load": peak}),
        Row("c4. 16 MB/s raw on 4 streams, zstd: throttles (emulator)",
            peak["emulator_throttles"], "", None, "", "0", peak["emulator_throttles"] == 0,
            f"seen by the client: {peak['throttled_records_seen']} records, "
            f"{peak['throttled_requests_seen']} requests"),
        Row("c4. 16 MB/s raw on 4 streams, zstd: events lost", lost, "events",
            peak["events_put"], "events put", "0",
            lost == 0 and peak["events_failed"] == 0 and peak["closed_cleanly"]),
    ]

    # c5: CPU per raw byte.
    per = {mode: [_ns_per_byte(r) for r in rs] for mode, rs in runs.items()}
    med = {mode: {k: statistics.median(p[k] for p in ps) for k in ps[0]}
           for mode, ps in per.items()}
    z, n = med["zstd"]["total"], med["none"]["total"]

    def stages(m: dict[str, float]) -> str:
        return ", ".join(f"{k} {m[k]:.2f}" for k in ("put", *LIBRARY_KINDS))

    rows.append(Row(
        "c5. library CPU per raw byte at 16 MB/s, zstd vs none", z, "CPU ns/raw B", n,
        "no compression, same run", f"<= {CPU_GOAL}x", z <= CPU_GOAL * n,
        f"ns/raw B by stage, zstd: {stages(med['zstd'])}; none: {stages(med['none'])}; "
        f"medians of {rounds} interleaved rounds of {seconds:g} s",
        {"per_round": per, "emulator_cpu_seconds": emu_cpu,
         "loads": {m: rs for m, rs in runs.items()}}))
    for mode in ("zstd", "none"):
        rs = runs[mode]
        raw = sum(r["window_raw_sent"] for r in rs)
        billed = sum(r["window_billed"] for r in rs)
        rows.append(Row(
            f"c5. 16 MB/s on 16 streams, {mode}: delivered", statistics.median(
                r["delivered_raw_slope_mb_s"] for r in rs), "MB/s raw",
            statistics.median(r["offered_raw_mb_s"] for r in rs), "offered",
            notes=f"billed/raw {billed / max(1, raw):.4f} (wall clock); emulator throttles "
                  f"{sum(r['emulator_throttles'] for r in rs)}; events lost "
                  f"{sum(r['events_put'] - r['events_delivered'] for r in rs)}; backlog "
                  f"{statistics.median(r['backlog_start_bytes'] for r in rs) / 1e6:.1f} -> "
                  f"{statistics.median(r['backlog_end_bytes'] for r in rs) / 1e6:.1f} MB "
                  "over the window (medians)"))

    # c6: page faults.
    for mode in ("zstd", "none"):
        value, where = _faults(runs[mode])
        rows.append(Row(
            f"c6. minor page faults per 4 KB raw, put to ack, {mode}", value, "faults",
            goal=f"<= {FAULTS_GOAL}", met=value <= FAULTS_GOAL,
            notes=_share_text(where, value), details=where))
    for mode in ("zstd", "none") if kept["zstd"] else ():
        value, where = _faults(kept[mode])
        plain, _ = _faults(runs[mode])
        rows.append(Row(
            f"c6. same, {mode}, glibc keeping freed memory", value, "faults", plain,
            "default allocator", notes=_share_text(where, value) + "; env " + " ".join(
                f"{k}={v}" for k, v in KEEP_FREED.items()), details=where))
    return rows


# -- c7: faults injected --------------------------------------------------------------------

def fault_injection_rows(quick: bool) -> list[Row]:
    seconds = 3.0 if quick else 10.0
    rows = []
    pool = event_pool("tracking", POOL, 7)  # what compressed_load puts, same seed
    for codec in ("zstd",) if quick else ("zstd", "gzip"):
        with EmulatorProcess(FAULT_STREAMS, "standard", "--fault-rates", FAULT_RATES,
                             "--seed", "18") as emulator:
            r = _load(emulator, FAULT_STREAMS, codec, warmup=0.5, seconds=seconds,
                      extra=("--stamp",))
            injected = emulator.stats().faults
            files = emulator.control.flush()
            # Read before the emulator stops: its scratch directory goes with it.
            seen: dict[int, int] = {}
            wrong = 0
            for paths in files.values():
                for path in paths:
                    data = decompress_object(path.read_bytes())
                    for line in data.split(b"\n"):
                        if not line:
                            continue
                        seq = orjson.loads(line)["seq"]
                        seen[seq] = seen.get(seq, 0) + 1
                        if line != orjson.dumps({**pool[seq % len(pool)], "seq": seq}):
                            wrong += 1
        expected = _expected_seqs(r)
        missing = len(expected - seen.keys())
        duplicates = sum(v - 1 for v in seen.values())
        ok = (missing == 0 and wrong == 0 and r["events_failed"] == 0 and r["closed_cleanly"]
              and not seen.keys() - expected)
        rows.append(Row(
            f"c7. events lost with faults injected, {codec}", missing, "events", len(expected),
            "events put", "0", ok,
            f"injected over the run: {dict(injected)}; client: "
            f"{r['retried_records']} record sends retried, "
            f"{r['possible_duplicates']} possible duplicates, {duplicates} duplicates found, "
            f"{wrong} lines not as put, failed {r['events_failed']}",
            {"load": r, "injected": dict(injected), "duplicates": duplicates,
             "objects": sum(len(p) for p in files.values())}))
    return rows


def _expected_seqs(r: dict[str, Any]) -> set[int]:
    """Producer k put seq k, k + threads, k + 2 threads, ... (``compressed_load``)."""
    threads = r["threads"]
    return {k + threads * i for k, count in enumerate(r["put_counts"]) for i in range(count)}


if __name__ == "__main__":
    import sys

    from .emulator_proc import AWS_ENV
    from .report import table

    os.environ.update(AWS_ENV)
    print(table(run("--quick" in sys.argv)))

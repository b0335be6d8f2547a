"""Figures 4, 5, 6 and 8: the emulator in one process, the producer in another.

Every producer runs in a fresh process (``benchmarks.load``, ``benchmarks.naive``), so its
CPU time and peak RSS are its own; the emulator's CPU is read from /proc and reported apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .botocore_profile import signing_floor_ns_per_byte, signing_records
from .emulator_proc import AWS_ENV, EmulatorProcess
from .report import Row
from .tls_floor import encrypt_ns_per_byte

ROOT = Path(__file__).resolve().parent.parent
STREAMS = [f"bench-{k}" for k in range(16)]
EVENT_BYTES = 4096
CPU_GOAL = 0.10
#: The library's CPU per byte shipped against signing the same bytes (issue goal).
LIBRARY_GOAL = 2.0
PUT_P99_GOAL_NS = 1e6
PUT_P999_GOAL_NS = 5e6
THROUGHPUT_GOAL_MB_S = 80.0


def _child(module: str, *args: str, timeout: float,
           env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, **AWS_ENV, **(env or {})}, timeout=timeout, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _steady_rate(samples: list[list[float]], skip_fraction: float = 0.2) -> float:
    """Delivered bytes/s over the samples after the first ``skip_fraction`` of the run."""
    if len(samples) < 3:
        return 0.0
    t_end = samples[-1][0]
    t0 = samples[0][0]
    first = next(s for s in samples if s[0] >= t0 + (t_end - t0) * skip_fraction)
    last = samples[-1]
    return (last[2] - first[2]) / max(1e-9, last[0] - first[0])


def steady_load(quick: bool) -> list[Row]:
    """Figures 4 and 6: 16 streams at 1 MiB/s, 4,000 events/s of 4 KB."""
    return _steady_load(quick, tls=False)


def steady_load_tls(quick: bool) -> list[Row]:
    """Figure 4 over HTTPS (the emulator with ``--tls``), against a floor that also
    encrypts the bodies."""
    return _steady_load(quick, tls=True)


def _steady_load(quick: bool, *, tls: bool) -> list[Row]:
    seconds = 5.0 if quick else 30.0
    rate = 4000
    with EmulatorProcess(STREAMS, "standard", *(["--tls"] if tls else [])) as emulator:
        emu_cpu0 = emulator.cpu_seconds()
        r = _child("benchmarks.load", "--endpoint", emulator.endpoint_url,
                   "--quota", "standard", "--step", f"{rate}:{seconds}",
                   "--size", str(EVENT_BYTES), timeout=seconds + 150,
                   env=emulator.client_env())
        emu_cpu = emulator.cpu_seconds() - emu_cpu0
        emu = emulator.stats()
    step = r["steps"][0]
    offered = step["offered_mb_s"]
    delivered = _steady_rate(r["backlog_samples"]) / 1e6
    backlog_max = max((s[1] for s in r["backlog_samples"]), default=0)
    throttles = emu.throttled_requests + emu.throttled_records
    lost = r["events_put"] - r["events_delivered"]
    cpu_share = step["cpu_share"]
    gb = r["bytes_sent"] / 1e9
    cpu_per_gb = r["cpu_seconds_total"] / gb if gb else float("inf")
    floor = signing_floor_ns_per_byte()  # CPU s per GB equals ns per byte
    floor_label = "b64+sha256 floor"
    cipher = ""
    if tls:
        plain_floor = floor
        encrypt, cipher = encrypt_ns_per_byte(signing_records())
        floor = plain_floor + encrypt
        floor_label = "b64+sha256+TLS floor"
    target_mb = rate * EVENT_BYTES / 1e6
    keeps_up = (offered >= 0.97 * target_mb and delivered >= 0.95 * offered
                and step["backlog_end_bytes"] <= 2.5 * offered * 1e6)
    details = {
        "seconds": seconds, "load": r, "emulator_cpu_seconds": emu_cpu,
        "emulator_stats": emu.to_json(), "backlog_max_bytes": backlog_max,
    }
    lat = step["put_latency_ns"]
    fresh = r["freshness_ns"]
    library_threads = sum(v for k, v in r["cpu_by_thread_offering"].items()
                          if k.startswith(("firehose-buffer", "firehose-transport")))
    offered_bytes = offered * 1e6 * step["seconds"]
    lib_ns_per_byte = (library_threads + step["put_seconds"]) * 1e9 / max(1.0, offered_bytes)
    linger = r["linger_seconds"]
    name = "4. 16x1 MiB/s, 4,000 ev/s x 4 KB" + (" over TLS" if tls else "")
    lib_notes = ("the buffer's own threads (worker, senders, deadline) plus time inside put(); "
                 "the benchmark's event building and pacing left out")
    if tls:
        details["floor_without_tls_ns_per_byte"] = plain_floor
        details["cipher"] = cipher
        lib_notes += f"; the floor encrypts each body ({cipher}, in memory), b64+sha256 " \
            f"alone is {plain_floor:.3f}"
        return [
            Row(f"{name}: delivered", delivered, "MB/s", offered, "offered",
                "keeps up", keeps_up, "steady part (after the first 20%)", details),
            Row(f"{name}: events lost", lost, "events", r["events_put"], "events put",
                "0", lost == 0 and r["closed_cleanly"]),
            Row(f"{name}: client CPU", cpu_share, "of one core", floor * offered / 1e3,
                f"{floor_label} at this rate", f"< {CPU_GOAL}", cpu_share < CPU_GOAL,
                f"by thread: {_round(r['cpu_by_thread_offering'])}"),
            Row(f"{name}: library CPU per byte", lib_ns_per_byte, "CPU ns/byte", floor,
                floor_label, f"<= {LIBRARY_GOAL}x floor",
                lib_ns_per_byte <= LIBRARY_GOAL * floor, lib_notes),
            Row(f"{name}: freshness p99 (put to ack)", fresh["p99"] / 1e9, "s", linger,
                "linger", f"< linger + 1 s = {linger + 1:g} s", fresh["p99"] / 1e9 < linger + 1),
        ]
    return [
        Row(f"{name}: delivered", delivered, "MB/s", offered, "offered",
            "keeps up", keeps_up, "steady part (after the first 20%)", details),
        Row(f"{name}: backlog max", backlog_max / 1e6, "MB", offered, "1 s of offered",
            notes=f"end of offering: {step['backlog_end_bytes'] / 1e6:.2f} MB; series in JSON"),
        Row(f"{name}: throttles (emulator)", throttles, "", None, "", "0", throttles == 0),
        Row(f"{name}: events lost", lost, "events", r["events_put"], "events put",
            "0", lost == 0 and r["closed_cleanly"]),
        Row(f"{name}: client CPU", cpu_share, "of one core", floor * offered / 1e3,
            "b64+sha256 floor at this rate", f"< {CPU_GOAL}", cpu_share < CPU_GOAL,
            f"by thread: {_round(r['cpu_by_thread_offering'])}"),
        Row(f"{name}: CPU per GB", cpu_per_gb, "CPU s/GB", floor, "b64+sha256 floor"),
        Row(f"{name}: library CPU per byte", lib_ns_per_byte, "CPU ns/byte", floor,
            "b64+sha256 floor", f"<= {LIBRARY_GOAL}x floor",
            lib_ns_per_byte <= LIBRARY_GOAL * floor, lib_notes),
        Row(f"{name}: peak RSS", r["peak_rss_kb"] / 1024, "MiB",
            r["rss_before_buffer_kb"] / 1024, "RSS before the buffer"),
        Row("6. put() p50 under load 4", lat["p50"] / 1e3, "us", None, ""),
        Row("6. put() p99 under load 4", lat["p99"] / 1e3, "us", lat["p50"] / 1e3, "p50",
            "< 1 ms", lat["p99"] < PUT_P99_GOAL_NS),
        Row("6. put() p99.9 under load 4", lat["p99.9"] / 1e3, "us", lat["p50"] / 1e3, "p50",
            "< 5 ms", lat["p99.9"] < PUT_P999_GOAL_NS,
            f"max {step['put_latency_max_ns'] / 1e6:.1f} ms"),
        Row("6. freshness p50 (put to ack)", fresh["p50"] / 1e9, "s", linger, "linger"),
        Row("6. freshness p99 (put to ack)", fresh["p99"] / 1e9, "s", linger, "linger",
            f"< linger + 1 s = {linger + 1:g} s", fresh["p99"] / 1e9 < linger + 1,
            f"oldest and youngest event of each record, {r['freshness_samples']} samples"),
    ]


def max_throughput(quick: bool) -> list[Row]:
    """Figure 5: 16 streams at 5 MiB/s; offered load raised until it does not keep up."""
    mb_steps = [32, 64] if quick else [16, 32, 48, 56, 64, 72, 80]
    seconds = 2.5 if quick else 6.0
    steps = [f"{mb * 1e6 / EVENT_BYTES:.0f}:{seconds}" for mb in mb_steps]
    with EmulatorProcess(STREAMS, "high") as emulator:
        emu_cpu0 = emulator.cpu_seconds()
        args = ["--endpoint", emulator.endpoint_url, "--quota", "high", "--stop-when-behind",
                "--size", str(EVENT_BYTES)]
        for s in steps:
            args += ["--step", s]
        r = _child("benchmarks.load", *args, timeout=len(steps) * seconds * 3 + 150)
        emu_cpu = emulator.cpu_seconds() - emu_cpu0
        emu = emulator.stats()
    kept = [
        s for s in r["steps"]
        if s["offered_mb_s"] >= 0.97 * s["rate_target"] * EVENT_BYTES / 1e6
        and s["delivered_mb_s"] >= 0.9 * s["offered_mb_s"]
    ]
    best = max((s["delivered_mb_s"] for s in kept), default=0.0)
    capacity = 16 * 5 * 1024 * 1024 / 1e6
    per_step = [
        {k: round(s[k], 2) for k in ("rate_target", "offered_mb_s", "delivered_mb_s",
                                     "cpu_share")} for s in r["steps"]
    ]
    return [Row(
        "5. highest sustained, 16x5 MiB/s, 4 KB", best, "MB/s", capacity, "quota 16x5 MiB/s",
        f">= {THROUGHPUT_GOAL_MB_S:g} MB/s", best >= THROUGHPUT_GOAL_MB_S,
        f"steps {per_step}",
        {"load": r, "emulator_cpu_seconds": emu_cpu, "emulator_stats": emu.to_json(),
         "emulator_throttles": emu.throttled_requests + emu.throttled_records},
    )]


def naive(quick: bool) -> list[Row]:
    """Figure 8: one PutRecord per event, and 500 events per PutRecordBatch, unpacked."""
    seconds = 2.0 if quick else 10.0
    streams = [f"naive-{k}" for k in range(16)]
    with EmulatorProcess(streams, "high") as emulator:
        r = _child("benchmarks.naive", "--endpoint", emulator.endpoint_url,
                   "--seconds", str(seconds), timeout=seconds * 4 + 150)
        emu = emulator.stats()
    lib = r["library"]
    rows = []
    for design in ("put_record", "put_record_batch"):
        d = r[design]
        rows += [
            Row(f"8. events/s: library vs {design}", lib["events_per_s"], "events/s",
                d["events_per_s"], design, details={"result": r} if design == "put_record"
                else {"emulator_stats": emu.to_json()}),
            Row(f"8. CPU per event: library vs {design}", lib["cpu_us_per_event"], "us",
                d["cpu_us_per_event"], design),
            Row(f"8. billed/raw: library vs {design}", lib["billed_ratio"], "",
                d["billed_ratio"], design),
        ]
    return rows


def _round(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in values.items()}

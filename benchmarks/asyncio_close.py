"""How long the event loop stalls while ``await buffer.aclose()`` drains a ~30 MB backlog,
and how long put() holds the loop when the buffer is full (``on_full="block"``).

A 1 ms ticker task records the gap between its wake-ups; the figures are its longest gap and
p99 gap while ``aclose(timeout)`` runs, against the same ticker on an idle loop for the same
time (the reference, measured in the same run). The emulator runs in its own process at the
standard quota on two streams (2 MiB/s in all), so a 30 MB backlog cannot drain in the
timeout and close() gives up with events pending: the loop must stay responsive throughout.

    python benchmarks/asyncio_close.py [--quick]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.emulator_proc import AWS_ENV, EmulatorProcess  # noqa: E402
from benchmarks.report import Row  # noqa: E402
from firehose_buffer import BufferConfig, BufferFullError, FirehoseBuffer  # noqa: E402

STREAMS = ["close-a", "close-b"]
EVENT = {"kind": "page_view", "user": "u-12345", "payload": "x" * 1000}  # ~1.05 KB as JSON


async def _ticker(stop: asyncio.Event, gaps: list[float]) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def _ticked(work: asyncio.Future[object] | None, seconds: float) -> list[float]:
    """Gaps of a 1 ms ticker while ``work`` runs (or for ``seconds`` on an idle loop)."""
    stop = asyncio.Event()
    gaps: list[float] = []
    ticker = asyncio.create_task(_ticker(stop, gaps))
    await asyncio.sleep(0.05)  # the ticker's first gaps include its own start
    gaps.clear()
    if work is None:
        await asyncio.sleep(seconds)
    else:
        await work
    stop.set()
    await ticker
    return gaps


def _p99(gaps: list[float]) -> float:
    return statistics.quantiles(gaps, n=100)[98] if len(gaps) >= 100 else max(gaps)


def _fill(buffer: FirehoseBuffer, nbytes: int) -> int:
    events = nbytes // 1050
    for _ in range(events):
        buffer.put(EVENT)
    return events


async def _close_case(endpoint: str, backlog: int, timeout: float) -> dict[str, float]:
    config = BufferConfig(streams=tuple(STREAMS), endpoint_url=endpoint, region="us-east-1",
                          max_buffer_bytes=2 * backlog, exit_timeout_seconds=timeout)
    buffer = FirehoseBuffer(config)
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    # Filled off the loop: the figure is about closing, not about putting 30 MB.
    events = await loop.run_in_executor(None, _fill, buffer, backlog)
    fill_s = time.perf_counter() - t0
    started = time.perf_counter()
    result_box: list[object] = []

    async def close() -> None:
        result_box.append(await buffer.aclose(timeout))

    gaps = await _ticked(asyncio.ensure_future(close()), 0)
    close_s = time.perf_counter() - started
    stats = buffer.stats()
    idle = await _ticked(None, close_s)
    return {"events": events, "fill_s": fill_s, "close_s": close_s, "max": max(gaps),
            "p99": _p99(gaps), "idle_max": max(idle), "idle_p99": _p99(idle),
            "delivered": stats.events_delivered, "failed": stats.events_failed,
            "result": bool(result_box[0]) if result_box else float("nan")}


async def _full_put_case(endpoint: str, attempts: int) -> dict[str, float]:
    """put() on the loop's thread with a full buffer and on_full="block"."""
    config = BufferConfig(streams=tuple(STREAMS), endpoint_url=endpoint, region="us-east-1",
                          max_buffer_bytes=1024 * 1024, on_full="block", max_block_seconds=1.0)
    buffer = FirehoseBuffer(config)
    took: list[float] = []
    raised = 0
    try:
        # Fill until the loop thread is told the buffer is full; then time each refusal.
        for _ in range(100_000):
            try:
                buffer.put(EVENT)
            except BufferFullError:
                break
        for _ in range(attempts):
            t0 = time.perf_counter()
            try:
                buffer.put(EVENT)
            except BufferFullError:
                raised += 1
            took.append(time.perf_counter() - t0)
            await asyncio.sleep(0)
    finally:
        await buffer.aclose(1.0)
    return {"max": max(took), "median": statistics.median(took), "p99": _p99(took),
            "raised": raised,
            "attempts": attempts}


def run(quick: bool) -> list[Row]:
    for key, value in AWS_ENV.items():
        os.environ.setdefault(key, value)
    backlog = 10_000_000 if quick else 30_000_000
    timeout = 2.0 if quick else 3.0
    with EmulatorProcess(STREAMS, "standard") as emulator:
        closing = asyncio.run(_close_case(emulator.endpoint_url, backlog, timeout))
        full = asyncio.run(_full_put_case(emulator.endpoint_url, 200 if quick else 1000))
    mb = backlog / 1e6
    return [
        Row(f"asyncio: longest loop stall during aclose({timeout:g}), {mb:.0f} MB backlog",
            closing["max"] * 1e3, "ms", closing["idle_max"] * 1e3, "idle loop, same ticker",
            goal="a few ms (<= 5 ms)", met=closing["max"] <= 0.005,
            notes=f"aclose took {closing['close_s']:.2f} s; {closing['delivered']:.0f} of "
            f"{closing['events']:.0f} events delivered, {closing['failed']:.0f} failed",
            details=closing),
        Row(f"asyncio: p99 ticker gap during aclose, {mb:.0f} MB backlog", closing["p99"] * 1e3,
            "ms", closing["idle_p99"] * 1e3, "idle loop, same ticker"),
        Row("asyncio: put() on the loop thread, buffer full, on_full=block (p99)",
            full["p99"] * 1e6, "us", notes=f"median {full['median'] * 1e6:.1f} us, max "
            f"{full['max'] * 1e6:.0f} us (the worker holding the GIL or the buffer's lock); "
            f"raised BufferFullError {full['raised']}/{full['attempts']}", details=full),
    ]


if __name__ == "__main__":
    from benchmarks.report import table

    print(table(run("--quick" in sys.argv)))

"""What guarding put() against re-entry (a signal handler or a finalizer calling put() while the
same thread is inside it) would cost put(), against bare orjson.dumps in the same run.

    python -m benchmarks.reentry_cost [--rounds 60]

Each candidate guard wraps the real put() of a buffer shipping to an in-process null transport,
so every figure is "put() + guard"; "put() + empty wrapper" isolates the wrapper's own call.
Wrapped around every put() this is what the guard costs a free-threaded build (where every
put() takes the lock) or a guard checked on the fast path; on a GIL build a guard needed only
in the slow path is paid once per segment (one put() in thousands), shown as "amortized".
Also: what each way of waking the worker costs (put() wakes it only when it sleeps), and what
deferring one re-entrant line to a queue costs that event.
"""

from __future__ import annotations

import argparse
import gc
import queue
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from .events import Event, fixed_size
from .sinks import null_buffer

SIZE = 512


def _loop_ns(fn: Callable[[Any], object], items: list[Any]) -> float:
    start = time.thread_time_ns()
    for item in items:
        fn(item)
    return (time.thread_time_ns() - start) / len(items)


def _guards(put: Callable[[Event], bool]) -> dict[str, Callable[[Event], object]]:
    lock = threading.Lock()
    rlock = threading.RLock()
    local = threading.local()
    local.inside = False
    owner = [0]
    get_ident = threading.get_ident

    def empty(e: Event) -> object:
        return put(e)

    def with_lock(e: Event) -> object:
        with lock:
            return put(e)

    def with_rlock(e: Event) -> object:
        with rlock:
            return put(e)

    def thread_local_flag(e: Event) -> object:
        if local.inside:
            return False  # re-entered: drop (or queue) instead of waiting for ourselves
        local.inside = True
        try:
            return put(e)
        finally:
            local.inside = False

    def owner_ident(e: Event) -> object:
        me = get_ident()
        if owner[0] == me:
            return False
        owner[0] = me
        try:
            return put(e)
        finally:
            owner[0] = 0

    return {
        "put() + empty wrapper": empty,
        "put() + Lock": with_lock,
        "put() + RLock": with_rlock,
        "put() + thread-local 'inside put' flag": thread_local_flag,
        "put() + owner thread id (get_ident)": owner_ident,
    }


def _wakes() -> dict[str, Callable[[Any], object]]:
    event = threading.Event()
    simple: queue.SimpleQueue[None] = queue.SimpleQueue()
    raw = threading.Lock()

    def event_set(_: Any) -> object:
        event.set()
        return event.clear()

    def simple_put(_: Any) -> object:
        simple.put(None)
        return simple.get_nowait()

    def lock_release(_: Any) -> object:
        raw.acquire(False)
        return raw.release()

    return {
        "wake: threading.Event set+clear": event_set,
        "wake: SimpleQueue put+get_nowait": simple_put,
        "wake: raw lock acquire+release": lock_release,
    }


def run(rounds: int) -> None:
    events = fixed_size(2000, SIZE, seed=SIZE)
    buffer, _ = null_buffer()
    with buffer:
        put = buffer.put
        variants: dict[str, Callable[[Any], object]] = {"orjson.dumps": orjson.dumps,
                                                        "put()": put}
        variants.update(_guards(put))
        # The guards alone, around a call that does nothing: their own cost, without the
        # noise of put() (the worker shares the GIL).
        variants.update({name.replace("put()", "no-op"): fn
                         for name, fn in _guards(lambda e: True).items()})
        variants.update(_wakes())
        for fn in variants.values():
            _loop_ns(fn, events)  # warm up
        gc.collect()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, fn in variants.items():  # interleaved: drift hits every variant alike
                times[name].append(_loop_ns(fn, events))
        buffer.flush(30)
    median = {name: statistics.median(v) for name, v in times.items()}
    best = {name: min(v) for name, v in times.items()}
    config = buffer.config
    # README: a segment is max_buffer_bytes / (4 x streams), at most four records or 4 MiB.
    segment = min(config.max_buffer_bytes // (4 * len(config.streams)),
                  4 * config.record_target_bytes, 4 * 1024 * 1024)
    per_segment = segment // (SIZE + 1)
    dumps = median["orjson.dumps"]
    print(f"{rounds} rounds x {len(events)} events of {SIZE} B; ns per call (calling thread's "
          f"CPU, median of rounds)")
    print(f"{'variant':44} {'median':>8} {'best':>8} {'/dumps':>7} {'guard':>7} {'amortized':>9}")
    for name in variants:
        guard = amortized = ""
        for kind in ("put()", "no-op"):
            base = median[f"{kind} + empty wrapper"]
            if name.startswith(f"{kind} +") and name != f"{kind} + empty wrapper":
                guard = f"{median[name] - base:7.1f}"
                amortized = f"{(median[name] - base) / per_segment:9.3f}"
        print(f"{name:44} {median[name]:8.1f} {best[name]:8.1f} {median[name] / dumps:7.2f} "
              f"{guard:>7} {amortized:>9}")
    print(f"(guard: ns over the same empty wrapper; amortized: guard / {per_segment} puts, "
          f"one slow path per segment, default bound, one stream)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    run(parser.parse_args().rounds)


if __name__ == "__main__":
    main()

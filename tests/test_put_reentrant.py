"""put() called again on a thread that is already inside put() never hangs the process.

Signal handlers, finalizers (``__del__``, run by the garbage collector wherever the thread
allocates) and logging handlers call put() while the same thread is inside put(): to track a
shutdown, to log from a handler, to record that a resource was dropped. A producer library
must not deadlock the process for it. Whether the nested put() takes its event, queues it or
drops it with a count is the library's choice; what a user can rely on: the process goes on,
every event a put() returned True for is delivered, and the counters add up.

Each scenario runs in a child process, which dumps every thread's stack and exits if it
hangs, against a Firehose on 127.0.0.1 that stores what it receives.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from children import run_child
from counters import identity_gap
from hostile_server import HostileFirehose

pytestmark = pytest.mark.slow


@pytest.fixture
def firehose() -> Iterator[HostileFirehose]:
    with HostileFirehose() as server:
        yield server


def _check(out: dict[str, Any], firehose: HostileFirehose, *streams: str) -> None:
    """Nothing unexpected raised, every accepted event delivered once, the counters add up."""
    assert out["unexpected"] == [], out["unexpected"][:5]
    stored = Counter(
        (event["b"], event["n"])
        for stream in streams
        for event in map(orjson.loads, firehose.lines(stream))
    )
    accepted = [tuple(a) for a in out["accepted"]]
    lost = sorted(a for a in accepted if a not in stored)
    assert lost == [], f"{len(lost)} of {len(accepted)} accepted events lost: {lost[:10]}"
    assert [e for e, times in stored.items() if times > 1] == []
    assert out["flushed"]
    assert out["counters"]["events_buffered"] == 0
    assert identity_gap(out["counters"]) is None, identity_gap(out["counters"])
    assert out["counters"]["events_delivered"] == sum(stored.values())


# What every child below shares: a buffer on one stream with small segments (a slow path,
# which seals a segment and starts the next, every ~20 events) and a put() that records
# what became of each event.
COMMON = textwrap.dedent("""
    import dataclasses, gc, json, signal, sys, time
    from firehose_buffer import BufferConfig, FirehoseBuffer, FirehoseBufferError

    endpoint = sys.argv[1]
    buf = FirehoseBuffer(BufferConfig(
        streams=("s",), endpoint_url=endpoint, region="us-east-1", max_record_bytes=1024,
        max_buffer_bytes=64 * 4096, linger_seconds=0.05, max_block_seconds=0.3))
    out = {"accepted": [], "refused": [], "unexpected": []}

    def put(tag, n):
        heartbeat()
        try:
            ok = buf.put({"b": tag, "n": n, "pad": "x" * 150})
        except FirehoseBufferError:  # refused, and the caller is told so
            out["refused"].append([tag, n])
            return
        except Exception as exc:
            out["unexpected"].append(f"put() of {tag} {n} raised {exc!r}")
            return
        out["accepted" if ok else "refused"].append([tag, n])

    def finish():
        heartbeat(12)
        gc.set_threshold(700, 10, 10)
        out["flushed"] = bool(buf.flush(10))
        heartbeat(12)
        buf.close(10)
        s = buf.stats()
        out["counters"] = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)
                           if isinstance(getattr(s, f.name), int)}
        print(json.dumps(out))

    put("warm", 0)
    assert buf.flush(10)  # the worker runs: this is about put() in steady state
""")

SIGNAL_POINTS_CHILD = COMMON + textwrap.dedent("""
    from signal_points import SignalPoints
    points = SignalPoints(only="firehose_buffer" if sys.argv[2] == "library" else None)
    n = 0
    k = 1
    while True:
        for _ in range(100):
            points.run(k, lambda: put("nested", n), put, "outer", n)
            n += 1
            if points.hit:
                break
        if not points.hit:
            break  # no put() has k points: every point of every path was visited
        k += 1
    out["points"] = k - 1
    finish()
""")


@pytest.mark.parametrize("scope", ["library", "everything"])
def test_put_from_a_signal_handler_at_any_point_inside_put_does_not_hang(
    firehose: HostileFirehose, scope: str,
) -> None:
    """A signal handler that calls put() runs wherever the main thread is when the signal is
    handled: for each point inside put() where CPython can run a handler (in the library's
    code, or anywhere put() runs), a put() from a handler there. A handler running while
    put() holds a lock (sealing a full segment) must not wait for that same lock: the main
    thread and then the worker would hang for good."""
    out = run_child(SIGNAL_POINTS_CHILD, firehose.endpoint_url, scope, deadline=30)
    assert out["points"] >= 20, f"the sweep reached only {out['points']} points"
    _check(out, firehose, "s")


FINALIZER_CHILD = COMMON + textwrap.dedent("""
    from signal_points import SignalPoints

    class Tracked:
        # Garbage in a reference cycle: only the garbage collector frees it, running
        # __del__ wherever the thread is when a collection starts.
        def __init__(self, n):
            self.n = n
            self.cycle = self

        def __del__(self):
            put("finalizer", self.n)

    def plant():
        # Garbage, and a threshold that the next allocation of a container exceeds: a
        # collection starts there, at an allocation inside put().
        Tracked(n)
        gc.set_threshold(max(1, gc.get_count()[0]))

    points = SignalPoints(only="firehose_buffer")
    n = 0
    k = 1
    while True:
        for _ in range(100):
            points.run(k, plant, put, "outer", n)
            gc.set_threshold(700, 10, 10)
            gc.collect(0)  # the garbage of a put() that allocated nothing after point k
            n += 1
            if points.hit:
                break
        if not points.hit:
            break
        k += 1
    out["points"] = k - 1
    finish()
""")


def test_put_from_a_finalizer_the_garbage_collector_runs_inside_put_does_not_hang(
    firehose: HostileFirehose,
) -> None:
    """An object whose ``__del__`` puts an event, freed by the garbage collector while the
    thread is inside put(): a collection starts at the first allocation after each point of
    put() in turn, and put()'s slow path allocates (an exception object, a new segment, a
    sealed segment's record) while it holds its lock: the finalizer's put() must not wait
    for that lock."""
    out = run_child(FINALIZER_CHILD, firehose.endpoint_url, deadline=30)
    assert out["points"] >= 20, f"the sweep reached only {out['points']} points"
    _check(out, firehose, "s")


STORM_CHILD = COMMON + textwrap.dedent("""
    busy = False
    h = 0

    def handler(signum, frame):
        global busy, h
        if busy:  # a handler interrupted by the next signal does not start another put
            return
        busy = True
        h += 1
        try:
            put("handler", h)
        finally:
            busy = False

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
    n = 0
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        put("loop", n)
        n += 1
    signal.setitimer(signal.ITIMER_REAL, 0)
    finish()
""")


def test_put_from_a_signal_handler_during_a_put_loop_does_not_hang(
    firehose: HostileFirehose,
) -> None:
    """The same as a user meets it: a loop putting events while a timer fires every 0.3 ms
    and its handler puts an event too: the loop goes on, and the handlers' events are taken
    or refused with a count."""
    out = run_child(STORM_CHILD, firehose.endpoint_url, deadline=30)
    handled = [a for a in out["accepted"] + out["refused"] if a[0] == "handler"]
    assert len(handled) >= 10, f"only {len(handled)} handlers ran"
    _check(out, firehose, "s")

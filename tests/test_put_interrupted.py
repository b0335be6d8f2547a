"""An exception raised inside put() by a signal handler never loses, miscounts or jams anything.

Ctrl-C raises KeyboardInterrupt, ``install_sigterm_handler()`` raises SystemExit, and any
application handler may raise: the exception surfaces wherever the main thread is, and a
producing main thread is often inside put(). The put() that raised may or may not have taken
its event; every event a put() returned True for must still be delivered, the counters must
still add up, no memory may be lost to the bound, and nothing may hang.

Each scenario runs in a child process (signals, and a hang is a possible failure) against a
Firehose on 127.0.0.1 that stores what it receives.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterator

import orjson
import pytest
from children import run_child
from hostile_server import HostileFirehose

pytestmark = pytest.mark.slow


@pytest.fixture
def firehose() -> Iterator[HostileFirehose]:
    with HostileFirehose() as server:  # no script: it answers like Firehose
        yield server


def _stored(firehose: HostileFirehose, *streams: str) -> Counter[tuple[str, int]]:
    """(tag, n) of every event stored, with how many times."""
    return Counter(
        (event["b"], event["n"])
        for stream in streams
        for event in map(orjson.loads, firehose.lines(stream))
    )


# Puts with an exception injected at each signal check point in turn (see signal_points.py),
# each kind of exception at each point, then measures what the buffer still holds when the
# endpoint stalls, against a fresh buffer's.
SWEEP_CHILD = textwrap.dedent("""
    import json, sys
    from signal_points import SignalPoints, StallingClient
    from firehose_buffer import BufferConfig, BufferFullError, FirehoseBuffer

    endpoint, scope = sys.argv[1], sys.argv[2]
    KINDS = (KeyboardInterrupt, SystemExit, RuntimeError)
    client = StallingClient(endpoint)
    # One stream; 64 segments of 4 KiB (four 1 KB records): put() takes its slow path, which
    # seals a segment and starts the next, every ~20 events.
    config = BufferConfig(streams=("s",), max_record_bytes=1024, max_buffer_bytes=64 * 4096,
                          linger_seconds=0.05, max_block_seconds=0.3)
    points = SignalPoints(only="firehose_buffer" if scope == "library" else None)
    out = {"accepted": [], "raised": [], "refused": [], "unexpected": []}

    def put(buf, tag, n, k=0, kind=RuntimeError):
        heartbeat()
        event = {"b": tag, "n": n, "pad": "x" * 150}
        injected = kind(f"injected at signal point {k}")
        def throw():
            raise injected
        try:
            ok = points.run(k, throw, buf.put, event) if k else buf.put(event)
        except BufferFullError:
            out["refused"].append([tag, n])
            return False
        except BaseException as exc:
            if exc is injected:
                out["raised"].append([tag, n])
            else:
                out["unexpected"].append(f"put() raised {exc!r} (injected: {injected!r} "
                                         f"at {points.where})")
            return False
        out["accepted" if ok else "refused"].append([tag, n])
        return ok

    def capacity(buf, tag):
        # What the buffer takes while the endpoint does not answer: its bound's worth.
        client.stall()
        n = 0
        while put(buf, tag, n):
            n += 1
        client.resume()
        return n

    buf = FirehoseBuffer(config, client=client)
    put(buf, "swept", -1)
    assert buf.flush(10)  # the worker runs: this is about put() in steady state
    n = hits = 0
    for sweep in range(3):
        k = 1
        while True:
            for _ in range(100):  # a slow path comes by within ~20 puts
                put(buf, "swept", n, k, KINDS[(k + sweep) % 3])
                n += 1
                if points.hit:
                    break
            if not points.hit:
                break  # no put() has k points: every point of every path was visited
            hits += 1
            k += 1
    for _ in range(50):
        put(buf, "swept", n)
        n += 1
    heartbeat(15)
    flushed = bool(buf.flush(10))  # idle, as the fresh buffer is
    kept = capacity(buf, "after")
    heartbeat(15)
    flushed = bool(buf.flush(10)) and flushed
    buf.close(10)
    s = buf.stats()
    fresh = FirehoseBuffer(config, client=client)
    kept_fresh = capacity(fresh, "fresh")
    heartbeat(15)
    fresh.close(10)
    out.update(hits=hits, flushed=flushed, capacity=kept, fresh_capacity=kept_fresh,
               put=s.events_put, delivered=s.events_delivered, failed=s.events_failed,
               dropped=s.events_dropped, buffered=s.events_buffered)
    print(json.dumps(out))
""")


@pytest.mark.parametrize("scope", ["library", "everything"])
def test_an_exception_at_any_point_inside_put_loses_nothing(
    firehose: HostileFirehose, scope: str,
) -> None:
    """A KeyboardInterrupt, SystemExit or handler exception raised at any point where a
    signal handler can run inside put() (in the library's code, or anywhere put() runs:
    the standard library's threading included) must leave the buffer whole: every event a
    put() returned True for is delivered, the counters add up, the buffer still holds its
    bound's worth, and nothing hangs. Losing accepted events uncounted, or a lock left held,
    is what makes a Ctrl-C or a SIGTERM during a busy loop cost data or a hung process."""
    out = run_child(SWEEP_CHILD, firehose.endpoint_url, scope, deadline=30)
    assert out["unexpected"] == [], out["unexpected"][:5]
    assert out["hits"] >= 20, f"the sweep reached only {out['hits']} points"
    stored = _stored(firehose, "s")
    accepted = [tuple(a) for a in out["accepted"]]
    lost = sorted(a for a in accepted if a not in stored)
    assert lost == [], (
        f"{len(lost)} of {len(accepted)} accepted events never arrived (e.g. {lost[:10]}); "
        f"the buffer counted put={out['put']} delivered={out['delivered']}"
    )
    assert [e for e, times in stored.items() if times > 1] == []
    assert out["put"] == out["delivered"] + out["failed"] + out["dropped"] + out["buffered"]
    assert out["buffered"] == 0 and out["flushed"]
    assert out["delivered"] == sum(times for (tag, _), times in stored.items() if tag != "fresh")
    assert out["capacity"] >= 0.95 * out["fresh_capacity"], (
        f"after {out['hits']} interrupted puts the buffer holds {out['capacity']} events while "
        f"the endpoint stalls, a fresh one {out['fresh_capacity']}: memory leaked from the bound"
    )


# Puts as fast as it can for a while, a timer firing every 0.3 ms; the handler raises once per
# put() call (KeyboardInterrupt, SystemExit or RuntimeError in turn), as Ctrl-C, SIGTERM or an
# application's handler would.
STORM_CHILD = textwrap.dedent("""
    import json, signal, sys, time
    from firehose_buffer import BufferConfig, FirehoseBuffer, Quota

    endpoint, seconds = sys.argv[1], float(sys.argv[2])
    KINDS = (KeyboardInterrupt, SystemExit, RuntimeError)
    buf = FirehoseBuffer(BufferConfig(
        streams=("s", "t"), quota=Quota.HIGH, endpoint_url=endpoint, region="us-east-1",
        max_record_bytes=4096, max_buffer_bytes=1 << 20, linger_seconds=0.05,
        max_block_seconds=5))
    buf.put({"b": "warm", "n": 0})
    assert buf.flush(10)
    armed = False
    fired = 0

    def handler(signum, frame):
        global armed, fired
        if armed:
            armed = False
            fired += 1
            raise KINDS[fired % 3]("from a signal handler")

    out = {"accepted": [], "raised": 0}
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        heartbeat()
        try:
            armed = True
            ok = buf.put({"b": "storm", "n": n, "pad": "x" * 200})
            armed = False
            if ok:
                out["accepted"].append(["storm", n])
        except KINDS:
            armed = False
            out["raised"] += 1
        n += 1
    signal.setitimer(signal.ITIMER_REAL, 0)
    armed = False
    heartbeat(12)
    flushed = bool(buf.flush(10))
    heartbeat(12)
    buf.close(10)
    s = buf.stats()
    out.update(flushed=flushed, put=s.events_put, delivered=s.events_delivered,
               failed=s.events_failed, dropped=s.events_dropped, buffered=s.events_buffered)
    print(json.dumps(out))
""")


def test_exceptions_from_a_signal_handler_during_a_put_loop_lose_nothing(
    firehose: HostileFirehose,
) -> None:
    """The same as a user meets it: a producing loop whose put() calls are interrupted by a
    raising signal handler thousands of times (a timer every 0.3 ms). Every event put()
    returned True for is delivered, the counters add up, and flush() and close() return:
    not hundreds of accepted events lost uncounted, not a hang."""
    out = run_child(STORM_CHILD, firehose.endpoint_url, "2.0", deadline=30)
    assert out["raised"] > 100, f"only {out['raised']} puts were interrupted"
    stored = _stored(firehose, "s", "t")
    lost = sorted(tuple(a) for a in out["accepted"] if tuple(a) not in stored)
    assert lost == [], (
        f"{len(lost)} of {len(out['accepted'])} accepted events never arrived "
        f"(e.g. {lost[:10]}); the buffer counted put={out['put']} "
        f"delivered={out['delivered']}"
    )
    assert out["flushed"]
    assert out["put"] == out["delivered"] + out["failed"] + out["dropped"] + out["buffered"]
    assert out["delivered"] == sum(stored.values())


# For each signal check point of a buffer's very first put() (which starts the worker
# thread), a fresh buffer whose first put() is interrupted there, then three plain puts.
FIRST_PUT_CHILD = textwrap.dedent("""
    import json, sys, threading, time
    from signal_points import SignalPoints, StallingClient
    from firehose_buffer import BufferConfig, FirehoseBuffer

    endpoint = sys.argv[1]
    client = StallingClient(endpoint)  # never stalled: one boto3 client for every buffer
    crashes = []
    sys.unraisablehook = lambda u: crashes.append(f"{u.err_msg}: {u.exc_type.__name__}")
    threading.excepthook = lambda a: crashes.append(f"{a.thread.name}: {a.exc_type.__name__}")
    config = BufferConfig(streams=("s",), linger_seconds=0.05)
    points = SignalPoints()
    trials, unexpected = [], []

    def os_threads():
        for line in open("/proc/self/status"):
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise RuntimeError("no thread count")

    before = os_threads()
    for kind in (RuntimeError, KeyboardInterrupt):
        k = 1
        while True:
            heartbeat()
            buf = FirehoseBuffer(config, client=client)
            tag = f"{kind.__name__}-{k}"
            injected = kind("injected")
            def throw():
                raise injected
            accepted = []
            try:
                if points.run(k, throw, buf.put, {"b": tag, "n": 0}):
                    accepted.append(0)
            except BaseException as exc:
                if exc is not injected:
                    unexpected.append(f"{tag}: put() raised {exc!r} (injected at "
                                      f"{points.where})")
            if not points.hit:
                buf.close(5)
                break
            for n in (1, 2, 3):
                if buf.put({"b": tag, "n": n}):
                    accepted.append(n)
            trials.append({"tag": tag, "where": points.where, "buf": buf,
                           "accepted": accepted})
            k += 1
    heartbeat(15)  # the phases below wait 2 + 4 + 2 s at most
    # linger_seconds is 0.05: the worker sends without being asked.
    end = time.monotonic() + 2.0
    def late():
        return [t for t in trials if t["buf"].stats().events_delivered < len(t["accepted"])]
    while late() and time.monotonic() < end:
        time.sleep(0.05)
    late_ones = [[t["tag"], t["where"]] for t in late()]
    closers = [threading.Thread(target=t["buf"].close, args=(3,), daemon=True) for t in trials]
    for c in closers:
        c.start()
    end = time.monotonic() + 4.0
    for c in closers:
        c.join(max(0.0, end - time.monotonic()))
    hung = [[t["tag"], t["where"]] for t, c in zip(trials, closers) if c.is_alive()]
    # Threads still running once every buffer is closed (senders leave soon after close()).
    end = time.monotonic() + 2.0
    while os_threads() > before and time.monotonic() < end:
        time.sleep(0.05)
    print(json.dumps({
        "trials": len(trials), "late": late_ones, "hung": hung,
        "threads_left": os_threads() - before, "crashes": crashes, "unexpected": unexpected,
        "accepted": [[t["tag"], n] for t in trials for n in t["accepted"]],
    }))
""")


def test_an_exception_in_the_first_put_leaves_a_working_buffer(
    firehose: HostileFirehose,
) -> None:
    """The first put() starts the worker thread. An exception landing anywhere in it (for
    each point a handler can run there, with an Exception and with a KeyboardInterrupt)
    must leave a buffer that works like any other: it sends what later puts accept within
    linger without being asked; close() returns and leaves no thread behind; no thread dies
    with a traceback; put() raises nothing but the exception raised in it. What an exception
    inside ``threading.Thread.start`` can do: kill the new thread (``KeyError`` in
    ``_bootstrap_inner``), make put() raise ``RuntimeError('release unlocked lock')``, leave
    a buffer whose worker never starts, or leave the wake-up lock held so that close()
    hangs."""
    out = run_child(FIRST_PUT_CHILD, firehose.endpoint_url, deadline=60)
    assert out["trials"] >= 40, f"only {out['trials']} points in the first put()"
    problems = {
        "threads that died": out["crashes"],
        "put() raised something else": out["unexpected"],
        "buffers that sent nothing until asked": out["late"],
        "close() that did not return": out["hung"],
    }
    found = {what: items for what, items in problems.items() if items}
    assert found == {}, "; ".join(
        f"{what}: {len(items)}, e.g. {items[:3]}" for what, items in found.items())
    assert out["threads_left"] <= 0, f"{out['threads_left']} threads outlived close()"
    stored = _stored(firehose, "s")
    lost = sorted(tuple(a) for a in out["accepted"] if tuple(a) not in stored)
    assert lost == [], f"accepted and never delivered: {lost[:10]}"

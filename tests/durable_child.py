"""A producing process for the durable tests and benchmark: two threads put numbered events
into a durable buffer and report each one put() accepted, until the process dies.

    python tests/durable_child.py ENDPOINT SPOOL_DIR REPORT HOW SEED

Each accepted event is reported right after put() returns, as ``"<thread> <n>\\n"`` appended
to REPORT with one write(2) (whole lines survive the kill; an event put() accepted but not
reported yet is simply not checked). HOW is how the process dies:

- ``wait``: it does not kill itself (the parent kills it: SIGKILL, SIGSTOP...);
- ``segv``: a thread dereferences NULL through ctypes (a crash in a C extension);
- ``abort``: ``os.abort()`` (a failed assertion in C code);
- ``oom``: a thread allocates and touches memory until the parent SIGKILLs the process, as
  the OOM killer does;
- ``term``: on SIGTERM it stops producing and closes the buffer (a normal exit);
- ``reentrant``: one event put while the thread holds the buffer's lock (as a signal handler
  or a finalizer re-entering put() would), then a SIGKILL before the worker can take it;
- ``fork``: the process forks; the child puts events of its own (thread 5), closes its buffer
  on SIGTERM, and the parent carries on until killed;
- ``cfork``: the process forks from C (libc's fork() through ctypes, holding the GIL), as a
  server that skips Python's fork hooks does; the child never uses the buffer (so nothing
  tells it that it was forked: it keeps every descriptor it inherited) and just lives on;
  the parent prints ``forked <pid>`` and carries on until killed;
- ``full``: the spool directory's file system is filled once the buffer is made, then events
  are put and flushed (segment files cannot be made any more).
- ``paced``: like ``wait``, but each thread puts PACED_RATE events a second (under the
  high quota, records do not wait, so streams move to free segments: every move is
  reported as a line ``m`` in ``REPORT.moves``, and the parent kills the process at a
  random moment among them).

The kill comes after a random delay (from SEED) once ``ready`` is printed. Events are
0.1-2 KB with, now and then, one longer than a segment (kept in a file of its own); the
buffer has two keyless streams and a small memory bound, so segments fill, seal, are reused,
and remainders move between streams.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import sys
import threading
import time
from typing import Any

from firehose_buffer import (
    BufferClosedError,
    BufferConfig,
    FirehoseBuffer,
    Quota,
    install_sigterm_handler,
)

STREAMS = ("d-0", "d-1")
#: 2 streams x 4 segments of 64 KiB: events over 64 KiB are kept apart.
MAX_BUFFER_BYTES = 512 * 1024
BIG_EVENT = 100_000
#: How long it produces before it kills itself (seconds, uniformly drawn).
DELAY = (0.2, 0.8)
#: Events a second each thread puts with ``paced``.
PACED_RATE = 500
#: ``paced``: room for moves (one is made only while at most half the bound is used).
PACED_BUFFER_BYTES = 4 * 1024 * 1024


def config(endpoint: str, spool_dir: str, **options: object) -> BufferConfig:
    values: dict[str, object] = {
        "streams": STREAMS, "endpoint_url": endpoint, "region": "us-east-1",
        "spool_dir": spool_dir, "durable": True, "linger_seconds": 0.05,
        "max_buffer_bytes": MAX_BUFFER_BYTES, "max_record_bytes": 200_000,
        "max_block_seconds": 30.0,
        "retry_initial_backoff_seconds": 0.01, "retry_max_backoff_seconds": 0.05,
    }
    values.update(options)
    return BufferConfig(**values)  # type: ignore[arg-type]


def produce(buffer: FirehoseBuffer, report: int, thread: int, seed: int,
            count: int | None = None, *, rate: float | None = None) -> None:
    rng = random.Random(seed * 31 + thread)
    n = 0
    due = time.monotonic()
    while count is None or n < count:
        if rate is not None:
            due += 1 / rate
            time.sleep(max(0.0, due - time.monotonic()))
        size = BIG_EVENT if rng.random() < 0.002 else rng.randint(100, 2000)
        try:
            buffer.put({"run": seed, "t": thread, "n": n, "pad": "x" * size})
        except BufferClosedError:
            return
        os.write(report, b"%d %d\n" % (thread, n))
        n += 1


def fill(directory: str) -> None:
    """Write a file in ``directory`` until its file system is full."""
    fd = os.open(os.path.join(directory, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError:
        pass
    finally:
        os.close(fd)


def main(endpoint: str, spool_dir: str, report_path: str, how: str, seed: int) -> None:
    rng = random.Random(seed)
    options: dict[str, object] = {}
    if how == "paced":
        options = {"quota": Quota.HIGH, "max_buffer_bytes": PACED_BUFFER_BYTES}
    buffer = FirehoseBuffer(config(endpoint, spool_dir, **options))
    report = os.open(report_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if how == "reentrant":
        with buffer._engine.lock:
            buffer.put({"run": seed, "t": 7, "n": 0, "pad": "re-entrant"})
            os.write(report, b"7 0\n")
            os.kill(os.getpid(), signal.SIGKILL)
    if how == "full":
        produce(buffer, report, 0, seed, count=20)  # a segment file made
        fill(os.path.dirname(spool_dir))
        produce(buffer, report, 1, seed, count=2000)  # and now none can be
        result = buffer.close(30)
        print(f"closed {bool(result)} fallbacks {buffer._engine.store.fallbacks}", flush=True)
        return
    if how == "term":
        install_sigterm_handler()
    rate = None
    if how == "paced":
        rate = PACED_RATE
        acc = buffer._engine.acc
        reseat = acc.reseat
        moves = os.open(report_path + ".moves", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

        def reported(*args: Any) -> int | None:
            end = reseat(*args)
            if end is not None:
                os.write(moves, b"m\n")
            return end

        acc.reseat = reported  # type: ignore[method-assign]
    for t in range(2):
        threading.Thread(target=produce, args=(buffer, report, t, seed),
                         kwargs={"rate": rate}, daemon=True).start()
    print("ready", flush=True)
    if how == "term":
        # Short sleeps: a SIGTERM the kernel hands to another thread (it does, right after a
        # SIGCONT, while the main thread is still marked stopped) runs its handler within one.
        for _ in range(6000):
            time.sleep(0.1)
    time.sleep(rng.uniform(*DELAY))
    if how == "fork":
        if os.fork() == 0:
            produce(buffer, report, 5, seed, count=300)
            install_sigterm_handler()
            print("child ready", flush=True)
            for _ in range(6000):
                time.sleep(0.1)
        time.sleep(600)
    if how == "cfork":
        pid = ctypes.PyDLL(None).fork()
        if pid == 0:
            while True:
                time.sleep(0.1)
        print(f"forked {pid}", flush=True)
        time.sleep(600)
    if how == "segv":
        threading.Thread(target=ctypes.string_at, args=(0,), daemon=True).start()
    elif how == "abort":
        os.abort()
    elif how == "oom":
        open(report_path + ".allocating", "wb").close()
        print("allocating", flush=True)
        hog = []
        while True:
            hog.append(bytearray(b"\1" * (16 * 1024 * 1024)))
            if len(hog) > 8:
                hog.clear()
    time.sleep(600)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))

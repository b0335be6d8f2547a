"""Small helpers the tests share: a keeping on_failure, waiting with a deadline, the lines
the emulator accepted, what a recovery would find in durable segment files now, and which
caller a hook serves."""

from __future__ import annotations

import mmap
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from firehose_buffer._storage.durable import PAGE, read_image
from firehose_buffer.emulator import LocalFirehose


class Reported:
    """An ``on_failure`` that keeps what it is handed, with the reason."""

    def __init__(self) -> None:
        self.events: list[tuple[bytes, str]] = []
        self._lock = threading.Lock()

    def __call__(self, events: list[bytes], reason: str) -> None:
        with self._lock:
            self.events.extend((e, reason) for e in events)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def accepted_lines(firehose: LocalFirehose, stream: str) -> list[bytes]:
    """Every event line the emulator accepted for ``stream``, in order."""
    return [line for record in firehose.accepted_records(stream)
            for line in record[:-1].split(b"\n")]


def recover_now(owner: Path) -> list[tuple[int, bool]]:
    """What a recovery would send if the process died now: (event id, counted as a
    possible duplicate) for every line, in every file of the owner."""
    out: list[tuple[int, bool]] = []
    for path in sorted(owner.glob("*.seg")):
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            image = read_image(m)
            if image is None:
                continue
            for a, b in image.unacked():
                pos = a
                for line in m[PAGE + a:PAGE + b].splitlines(keepends=True):
                    end = pos + len(line)
                    out.append((orjson.loads(line)["i"], end <= image.sent))
                    pos = end
    return out


def line_ids(data: bytes | memoryview) -> list[int]:
    return [orjson.loads(line)["i"] for line in bytes(data).splitlines()]


def called_from(name: str) -> bool:
    """Whether a hook runs for a call made by a function named ``name``: the hook's caller
    or one of the two above it (a hook on a method tells which caller it serves)."""
    frame = sys._getframe(2)  # 0 is this function, 1 the hook
    for _ in range(3):
        if frame is None:
            return False
        if frame.f_code.co_name == name:
            return True
        frame = frame.f_back
    return False

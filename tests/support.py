"""Small helpers the tests share: a keeping on_failure, waiting with a deadline, and the
lines the emulator accepted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

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

"""Shared fixtures: every test must leave no buffer or emulator thread behind."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import settings

# In CI, hypothesis explores the same examples every run (a seed per test): a red CI then
# means a change broke something, not that a new random example turned up. Locally it keeps
# exploring.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# No test may reach AWS: fake credentials, a fixed region, no shared config files.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_CONFIG_FILE", os.devnull)
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.devnull)

THREAD_PREFIXES = ("firehose-buffer-", "firehose-emulator")
THREAD_GRACE_SECONDS = 2.0


def _buffer_threads(exclude: set[threading.Thread]) -> list[threading.Thread]:
    return [
        t for t in threading.enumerate()
        if t.name.startswith(THREAD_PREFIXES) and t.is_alive() and t not in exclude
    ]


@pytest.fixture(autouse=True)
def no_leaked_buffer_threads() -> Iterator[None]:
    """Fail a test that leaves a worker, sender or emulator thread running (an unclosed
    buffer or a LocalFirehose never stopped).

    Threads get a short grace period after close(): senders leave when they next read
    their queue, which close() fills but does not wait for.
    """
    before = set(_buffer_threads(set()))
    yield
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    leaked = _buffer_threads(before)
    while leaked and time.monotonic() < deadline:
        time.sleep(0.02)
        leaked = _buffer_threads(before)
    if leaked:
        pytest.fail(
            f"test left {len(leaked)} thread(s) running: "
            f"{sorted(t.name for t in leaked)}; close every FirehoseBuffer and LocalFirehose",
        )


@pytest.fixture
def refused_endpoint() -> str:
    """An endpoint whose port nothing listens on: every connection is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"

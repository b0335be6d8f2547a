"""BufferFullError says what happened: an error that claims put() waited when it did not sends
whoever reads it after the wrong cause (a slow endpoint, a too small max_block_seconds)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from firehose_buffer import BufferConfig, BufferFullError, FirehoseBuffer
from firehose_buffer.emulator import LocalFirehose

GOOD, MISSING = "full-good", "full-missing"
MAX_BLOCK = 5.0


@pytest.fixture
def firehose(tmp_path: Path) -> Iterator[LocalFirehose]:
    # MISSING is never created: a call to it is answered ResourceNotFoundException, so its
    # events are handed to on_failure, on the worker thread.
    with LocalFirehose(streams=[GOOD], data_dir=tmp_path / "delivered") as fh:
        yield fh


def test_buffer_full_on_the_worker_thread_does_not_claim_to_have_waited(
    firehose: LocalFirehose,
) -> None:
    """put() from on_failure (the worker thread) on a full buffer with on_full="block"
    raises BufferFullError at once, rightly: only the worker makes room, so it must not
    wait for it. The message must not say that the buffer "stayed full for
    max_block_seconds=5.0", which did not happen."""
    raised: list[tuple[str, float]] = []
    done = threading.Event()
    holder: list[FirehoseBuffer] = []

    def on_failure(events: list[bytes], reason: str) -> None:
        # 20 events of 7 KB into a 64 KiB buffer the worker cannot drain while it runs this.
        for n in range(20):
            started = time.monotonic()
            try:
                holder[0].put({"again": n, "pad": "r" * 7000})
            except BufferFullError as exc:
                raised.append((str(exc), time.monotonic() - started))
        done.set()

    def router(event: Any) -> int:
        return 1 if isinstance(event, Mapping) and event.get("bad") else 0

    buffer = FirehoseBuffer(BufferConfig(
        streams=(GOOD, MISSING), endpoint_url=firehose.endpoint_url, region="us-east-1",
        router=router, linger_seconds=0.05, max_record_bytes=16_384, max_buffer_bytes=65_536,
        on_full="block", max_block_seconds=MAX_BLOCK, on_failure=on_failure,
    ))
    holder.append(buffer)
    try:
        buffer.put({"bad": True})
        wait_for(done.is_set, 2 * MAX_BLOCK + 10, "on_failure to finish")
    finally:
        buffer.close(5.0)
    assert raised, "the buffer never filled: the test did not test anything"
    false_claims = [(msg, round(waited, 3)) for msg, waited in raised
                    if "stayed full" in msg and waited < MAX_BLOCK]
    assert false_claims == [], (
        f"put() raised at once but said it had waited: {false_claims[:2]}"
    )

"""A real FirehoseBuffer (real threads) against the in-process fake service, driven by a
hypothesis state machine: random puts, flushes and faults must lose and invent nothing."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import orjson
from fakes import FakeFirehose
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from firehose_buffer import BufferConfig, FirehoseBuffer

STREAMS = ("b0", "b1", "b2")
WHOLE_CALL_FAULTS = ["http_500", "http_503", "reset_before", "reset_after", "access_denied",
                     "throttle_all"]


class BufferMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fake = FakeFirehose(streams=set(STREAMS), seed=11)
        self.failed: list[bytes] = []
        self.reasons: Counter[str] = Counter()
        self._failed_lock = threading.Lock()
        config = BufferConfig(
            streams=STREAMS,
            linger_seconds=0.02,
            max_record_bytes=3_000,
            retry_initial_backoff_seconds=0.001,
            retry_max_backoff_seconds=0.01,
            on_failure=self._on_failure,
            exit_timeout_seconds=5.0,
        )
        self.buffer = FirehoseBuffer(config, client=self.fake)
        self.put_lines: list[bytes] = []
        self.seq = 0
        self.flushed = False

    def _on_failure(self, events: list[bytes], reason: str) -> None:
        with self._failed_lock:
            self.failed.extend(events)
            self.reasons[reason] += len(events)

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    @rule(count=st.integers(min_value=1, max_value=25), pad=st.integers(0, 600))
    def put_dicts(self, count: int, pad: int) -> None:
        for _ in range(count):
            event: dict[str, Any] = {"seq": self._next(), "pad": "p" * ((pad * self.seq) % 601)}
            assert self.buffer.put(event)
            self.put_lines.append(orjson.dumps(event))
        self.flushed = False

    @rule(count=st.integers(min_value=1, max_value=10))
    def put_bytes(self, count: int) -> None:
        for _ in range(count):
            line = b'{"raw": %d}' % self._next()
            assert self.buffer.put(line)
            self.put_lines.append(line)
        self.flushed = False

    @rule(fault=st.sampled_from(WHOLE_CALL_FAULTS))
    def whole_call_fault(self, fault: str) -> None:
        self.fake.script.append(fault)

    @rule(rate=st.sampled_from([0.0, 0.0, 0.3, 0.8]))
    def per_record_failures(self, rate: float) -> None:
        self.fake.record_failure_rate = rate

    @rule()
    def flush(self) -> None:
        assert self.buffer.flush(15).pending == 0, f"flush timed out: {self.buffer.stats()}"
        self.flushed = True

    @precondition(lambda self: self.flushed)
    @invariant()
    def after_flush_every_event_is_delivered_or_reported(self) -> None:
        self._check()

    def _check(self) -> None:
        put = set(self.put_lines)
        assert len(put) == len(self.put_lines)
        delivered = self.fake.lines()
        with self._failed_lock:
            failed = list(self.failed)
        seen = Counter(delivered) + Counter(failed)
        invented = set(seen) - put
        assert not invented, f"{len(invented)} events nobody put, e.g. {sorted(invented)[:3]}"
        lost = put - set(seen)
        assert not lost, f"{len(lost)} events neither delivered nor reported: {sorted(lost)[:3]}"
        stats = self.buffer.stats()
        extra = sum(n - 1 for n in seen.values())
        assert extra <= stats.possible_duplicates, (
            f"{extra} extra copies, only {stats.possible_duplicates} possible duplicates counted"
        )
        assert stats.events_put == len(self.put_lines)
        assert stats.events_buffered == 0
        assert stats.events_put == (
            stats.events_delivered + stats.events_failed + stats.events_dropped
            + stats.events_buffered
        )
        assert stats.events_failed == len(failed) == sum(self.reasons.values())
        assert set(self.reasons) <= {"AccessDeniedException"}, self.reasons
        assert stats.bytes_buffered == 0

    def teardown(self) -> None:
        try:
            assert self.buffer.close(15).pending == 0
            self._check()
        finally:
            self.buffer.close(1)


BufferMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=20, deadline=None,
)
TestBufferMachine = BufferMachine.TestCase

